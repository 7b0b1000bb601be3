"""Handlers that control their response: status, headers, content type, Server-Sent Events."""
import asyncio
import base64
import time

from gantry_runtime import SSE, Event, Response, sse

# A 1x1 transparent PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def png(event, ctx):
    return Response(PNG, content_type="image/png", headers={"Cache-Control": "max-age=60"})


def created(event, ctx):
    return Response({"id": 7}, status=201, headers=[
        ("Location", "/things/7"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])


async def teapot(event, ctx):
    return Response("short and stout\n", status=418, content_type="text/plain; charset=utf-8")


def no_content(event, ctx):
    return Response(status=204, headers={"X-Trace": "t-1"})


def csv_stream(event, ctx):
    def rows():
        yield "a,b\n"
        yield "1,2\n"
    return Response(rows(), status=202, content_type="text/csv", headers={"X-Rows": "2"})


def bad_status(event, ctx):
    return Response("x", status=(event or {}).get("status", 99))


def bad_header(event, ctx):
    return Response("x", headers={(event or {}).get("name", "X-Gantry-Stream"): "0"})


@sse
def ticks(event, ctx):
    """``n`` events named ``tick`` with ids, then a plain message; raises at the end if ``fail``."""
    for i in range((event or {}).get("n", 3)):
        if i:
            time.sleep((event or {}).get("every", 0))
        yield Event({"i": i}, event="tick", id=i)
    yield "done"
    if (event or {}).get("fail"):
        raise ValueError("boom")


async def aticks(event, ctx):
    async def events():
        for i in range((event or {}).get("n", 3)):
            await asyncio.sleep((event or {}).get("every", 0))
            yield {"i": i}
        if (event or {}).get("fail"):
            raise ValueError("boom")
    return SSE(events(), headers={"Access-Control-Allow-Origin": "*"})


@sse
def fails_at_once(event, ctx):
    raise ValueError("before any event")
    yield


def plain_fails(event, ctx):
    yield "line 1\n"
    time.sleep((event or {}).get("every", 0))
    yield "line 2\n"
    raise ValueError("boom")


def partial_line_fails(event, ctx):
    yield "no newline"
    raise ValueError("boom")


async def records_fail(event, ctx):
    yield {"i": 0}
    raise ValueError("boom")

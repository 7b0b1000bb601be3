import asyncio
import os
import time


def echo(event, ctx):
    return {"event": event, "invocation_id": ctx.invocation_id, "uid": os.getuid()}


async def async_text(event, ctx):
    await asyncio.sleep(0)
    return f"hello {event['name']}"


def raw(event, ctx):
    return bytes(reversed(event))


def gen(event, ctx):
    for i in range(event["n"]):
        time.sleep(event.get("every", 0))
        yield f"line {i}\n"


async def agen(event, ctx):
    for i in range(event["n"]):
        await asyncio.sleep(event.get("every", 0))
        yield {"i": i}


def crash(event, ctx):
    if event.get("fail"):
        raise ValueError("boom")
    return {"ok": True}


async def slow(event, ctx):
    await asyncio.sleep(event["seconds"])
    return {"slept": event["seconds"]}


def write_root(event, ctx):
    try:
        open("/app/x", "w").close()
    except OSError as exc:
        return {"error": type(exc).__name__}
    return {"error": None}


def mark(event, ctx):
    """Which deployment answered: the MARK variable of the function's [env]."""
    return {"mark": os.environ.get("MARK", "")}


def traced(event, ctx):
    """The trace the handler was called in (docs/tracing.md): None when it has none."""
    return {"trace_id": ctx.trace_id, "span_id": ctx.span_id}

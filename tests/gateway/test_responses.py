"""Responses a handler controls, seen by real clients through the gateway: headers and status
with aiohttp, a failing plain stream with curl, `gantry invoke --stream`, and Server-Sent
Events in headless Chromium's EventSource.  The instances are real runtime processes running
tests/runtime/functions/responses.py."""
from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .chromium import Browser, find_chromium
from .support import ADMIN_KEY, AUTH, ROOT, add_instance, gateway, register_function

pytestmark = pytest.mark.timeout(90)

FUNCTIONS = ROOT / "tests" / "runtime" / "functions"
FRAME = b'\x1e{"error":{"code":"function_error","message":"ValueError: boom"}}\n'
ERROR_EVENT = b'event: error\ndata: {"code":"function_error","message":"ValueError: boom"}\n\n'


@pytest.fixture
def deploy(redis_client, runtimes):
    """deploy(name, handler): a runtime of responses.py's HANDLER registered as function NAME."""
    def _deploy(name: str, handler: str) -> None:
        rt = runtimes.start(f"responses:{handler}", GANTRY_CODE_DIR=str(FUNCTIONS)).wait_ready()
        register_function(redis_client, name)
        add_instance(redis_client, name, rt.port)
    return _deploy


async def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes, bytes]:
    """A subprocess, without blocking the loop the gateway runs on: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    return proc.returncode, out, err


async def gantry_invoke(client, tmp_path, *args: str) -> tuple[int, bytes, bytes]:
    env = {**os.environ, "GANTRY_URL": str(client.make_url("")).rstrip("/"), "GANTRY_API_KEY": ADMIN_KEY,
           "XDG_CONFIG_HOME": str(tmp_path)}
    return await run(sys.executable, "-m", "gantry.cli", "invoke", *args, env=env)


async def test_an_image_and_a_201_with_headers_reach_the_caller(redis_url, deploy):
    deploy("png", "png")
    deploy("created", "created")
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/invoke/png", json={}, headers=AUTH)
        body = await resp.read()
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
        assert body.startswith(b"\x89PNG\r\n\x1a\n") and resp.headers["Cache-Control"] == "max-age=60"
        resp = await client.post("/v1/invoke/created", json={}, headers=AUTH)
        assert resp.status == 201 and await resp.json() == {"id": 7}
        assert resp.headers["Location"] == "/things/7"
        assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert len(resp.headers["X-Gantry-Invocation-Id"]) == 32


async def test_the_gateway_drops_hop_by_hop_headers_of_an_instance(redis_url, redis_client, fake_upstream):
    async def answer(request):
        return web.Response(body=b"ok", headers={"Connection": "keep-alive, X-Hop", "X-Hop": "1",
                                                 "Keep-Alive": "timeout=5", "X-End": "2"})

    upstream = await fake_upstream(answer)
    register_function(redis_client, "hops")
    add_instance(redis_client, "hops", upstream.port)
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/invoke/hops", json={}, headers=AUTH)
        assert resp.status == 200 and await resp.read() == b"ok"
        assert resp.headers["X-End"] == "2"
        assert "X-Hop" not in resp.headers and "Keep-Alive" not in resp.headers


async def test_curl_sees_a_failing_plain_stream_end_with_the_error_frame_and_exit_18(redis_url, deploy):
    deploy("plainfail", "plain_fails")
    async with gateway(redis_url) as client:
        rc, out, err = await run("curl", "-sS", "-N", "-H", f"Authorization: Bearer {ADMIN_KEY}",
                                 "-H", "Content-Type: application/json", "-d", "{}",
                                 str(client.make_url("/v1/invoke/plainfail")))
    assert out == b"line 1\nline 2\n" + FRAME
    assert rc == 18, err     # CURLE_PARTIAL_FILE: the final chunk never came
    assert b"curl: (18)" in err


async def test_curl_sees_a_failing_sse_stream_end_with_the_error_event(redis_url, deploy):
    deploy("ssefail", "ticks")
    async with gateway(redis_url) as client:
        rc, out, err = await run("curl", "-sS", "-N", "-i", "-H", f"Authorization: Bearer {ADMIN_KEY}",
                                 "-H", "Content-Type: application/json", "-d", '{"n": 2, "fail": true}',
                                 str(client.make_url("/v1/invoke/ssefail")))
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-type: text/event-stream" in head.lower()
    assert body == (b'event: tick\nid: 0\ndata: {"i":0}\n\nevent: tick\nid: 1\ndata: {"i":1}\n\n'
                    b"data: done\n\n" + ERROR_EVENT)
    assert rc == 18, err


async def test_cli_prints_the_partial_stream_then_one_error_line(redis_url, deploy, tmp_path):
    deploy("clifail", "plain_fails")
    deploy("cliok", "csv_stream")
    deploy("clisse", "ticks")
    async with gateway(redis_url) as client:
        rc, out, err = await gantry_invoke(client, tmp_path, "clifail", "--stream")
        assert (rc, out, err) == (1, b"line 1\nline 2\n", b"gantry: error: function_error: ValueError: boom\n")
        rc, out, err = await gantry_invoke(client, tmp_path, "clifail")          # without --stream too
        assert (rc, out, err) == (1, b"line 1\nline 2\n", b"gantry: error: function_error: ValueError: boom\n")
        rc, out, err = await gantry_invoke(client, tmp_path, "clisse", "--stream", "-d", '{"n": 1, "fail": true}')
        assert (rc, err) == (1, b"gantry: error: function_error: ValueError: boom\n")
        assert out == b'event: tick\nid: 0\ndata: {"i":0}\n\ndata: done\n\n'
        rc, out, err = await gantry_invoke(client, tmp_path, "clisse", "--stream", "-d", '{"n": 1}')
        assert (rc, out, err) == (0, b'event: tick\nid: 0\ndata: {"i":0}\n\ndata: done\n\n', b"")
        rc, out, err = await gantry_invoke(client, tmp_path, "cliok", "--stream")
        assert (rc, out, err) == (0, b"a,b\n1,2\n", b"")


async def test_cli_reports_a_stream_cut_off_without_a_frame_in_one_line(redis_url, redis_client,
                                                                        fake_upstream, tmp_path):
    async def dies(request):
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(b"partial\n")
        request.transport.close()     # the instance died: no frame, no final chunk
        return resp

    upstream = await fake_upstream(dies)
    register_function(redis_client, "dies")
    add_instance(redis_client, "dies", upstream.port)
    async with gateway(redis_url) as client:
        rc, out, err = await gantry_invoke(client, tmp_path, "dies", "--stream")
    assert (rc, out) == (1, b"partial\n")
    assert err.startswith(b"gantry: error: stream_broken: the response was cut off after 8 bytes")
    assert err.count(b"\n") == 1 and b"Traceback" not in err


PAGE = """<!doctype html><meta charset="utf-8"><title>events</title>
<script>
const t0 = performance.now();
window.got = [];
const es = new EventSource("/events" + location.search);
const ms = () => Math.round(performance.now() - t0);
es.addEventListener("tick", e => got.push({type: "tick", id: e.lastEventId, data: JSON.parse(e.data), ms: ms()}));
es.onmessage = e => got.push({type: "message", data: e.data, ms: ms()});
es.addEventListener("error", e => {
  // a MessageEvent with data is the platform's error event; a bare Event is the connection's end
  got.push(e.data !== undefined ? {type: "error", data: JSON.parse(e.data)} : {type: "end"});
  es.close();
  window.result = got;
});
</script>"""


async def test_a_browser_eventsource_receives_the_events_in_order_and_the_error(redis_url, deploy):
    exe = find_chromium()
    if exe is None:
        pytest.fail("chromium is not installed: scripts/setup.sh installs it (Debian's chromium)")
    deploy("ticks", "ticks")
    async with gateway(redis_url) as client:
        calls = []

        # EventSource sends a GET with no Authorization header; the page's own origin (this
        # small backend) turns it into the gateway's POST with the key and relays the stream
        # chunk by chunk, and a cut-off stream as a cut-off stream.
        async def page(request):
            return web.Response(text=PAGE, content_type="text/html")

        async def events(request):
            event = {"n": 3, "every": 0.3, "fail": request.query.get("fail") == "1"}
            calls.append(event)
            async with aiohttp.ClientSession() as session:
                async with session.post(client.make_url("/v1/invoke/ticks"), json=event, headers=AUTH) as up:
                    resp = web.StreamResponse(status=up.status, headers={
                        "Content-Type": up.headers["Content-Type"], "Cache-Control": "no-cache"})
                    await resp.prepare(request)
                    try:
                        async for chunk in up.content.iter_any():
                            await resp.write(chunk)
                    except aiohttp.ClientPayloadError:
                        request.transport.close()
                        return resp
                    await resp.write_eof()
                    return resp

        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_get("/events", events)
        site = TestServer(app, host="127.0.0.1")
        await site.start_server()
        try:
            async with Browser(exe) as browser:
                ok = await browser.evaluate_when(str(site.make_url("/?fail=0")), "window.result || null")
                failed = await browser.evaluate_when(str(site.make_url("/?fail=1")), "window.result || null")
        finally:
            await site.close()
    ticks = [{"type": "tick", "id": str(i), "data": {"i": i}} for i in range(3)]
    assert [{k: v for k, v in e.items() if k != "ms"} for e in ok] == [
        *ticks, {"type": "message", "data": "done"}, {"type": "end"}]
    assert [{k: v for k, v in e.items() if k != "ms"} for e in failed] == [
        *ticks, {"type": "message", "data": "done"},
        {"type": "error", "data": {"code": "function_error", "message": "ValueError: boom"}}]
    # each event reached the page as it was produced (0.3 s apart), not buffered on the way
    gaps = [b["ms"] - a["ms"] for a, b in zip(ok[:3], ok[1:3])]
    assert all(gap > 200 for gap in gaps), ok
    assert len(calls) == 2      # the page closed each EventSource: no reconnection re-invoked it

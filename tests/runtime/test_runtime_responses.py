"""Responses a handler controls (gantry_runtime.Response, SSE, Event), and the error frame
that ends a stream that fails after its headers were sent; on the real runtime process."""
from __future__ import annotations

import http.client
import json

import pytest
from gantry_runtime import wire

from test_runtime_server import EXAMPLES, start, stream_lines  # noqa: F401  (the fixture, the raw reader)

pytestmark = pytest.mark.timeout(60)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def call(rt, handler_event=None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """POST /invoke with http.client, so repeated headers (Set-Cookie) stay apart."""
    conn = http.client.HTTPConnection("127.0.0.1", int(rt.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("POST", "/invoke", json.dumps(handler_event or {}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.msg, resp.read()
    finally:
        conn.close()


def test_a_handler_returns_an_image_with_its_content_type(start):
    rt = start("responses:png")
    status, headers, body = call(rt)
    assert status == 200 and body.startswith(PNG_MAGIC)
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == "max-age=60"
    assert "X-Gantry-Invocation-Id" in headers and "X-Gantry-Duration-Ms" in headers


def test_a_handler_sets_status_and_repeated_headers(start):
    rt = start("responses:created")
    status, headers, body = call(rt)
    assert status == 201 and json.loads(body) == {"id": 7}
    assert headers["Content-Type"] == "application/json"
    assert headers["Location"] == "/things/7"
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]


def test_other_statuses_and_an_empty_204(start):
    status, headers, body = call(start("responses:teapot"))
    assert (status, headers["Content-Type"], body) == (418, "text/plain; charset=utf-8", b"short and stout\n")
    status, headers, body = call(start("responses:no_content"))
    assert (status, body, headers["X-Trace"]) == (204, b"", "t-1")
    assert "Content-Type" not in headers


def test_a_streamed_response_with_its_own_status_and_type(start):
    rt = start("responses:csv_stream")
    status, headers, chunks, complete = stream_lines(rt.url, {})
    assert status == 202 and complete
    assert headers["Content-Type"] == "text/csv" and headers["X-Rows"] == "2"
    assert [c for _, c in chunks] == [b"a,b\n", b"1,2\n"]


@pytest.mark.parametrize("handler, event, message", [
    ("responses:bad_status", {}, "ValueError: Response status must be an int from 200 to 599, got 99"),
    ("responses:bad_status", {"status": 101}, "ValueError: Response status must be an int from 200 to 599, got 101"),
    ("responses:bad_header", {}, "ValueError: Response header 'X-Gantry-Stream': X-Gantry-* headers are the platform's"),
    ("responses:bad_header", {"name": "Transfer-Encoding"},
     "ValueError: Response header 'Transfer-Encoding' is set by the platform, not by a handler (hop-by-hop or framing)"),
    ("responses:bad_header", {"name": "Bad Name"},
     "ValueError: Response header name 'Bad Name' is not a valid HTTP header name"),
])
def test_a_bad_response_object_is_500_function_error_naming_the_problem(start, handler, event, message):
    rt = start(handler)
    status, headers, body = call(rt, event)
    assert status == 500 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": {"code": "function_error", "message": message}}


def test_sse_frames_each_item_as_an_event_as_it_is_produced(start):
    rt = start("responses:ticks")
    status, headers, chunks, complete = stream_lines(rt.url, {"n": 3, "every": 0.3})
    assert status == 200 and complete
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache" and headers["X-Accel-Buffering"] == "no"
    assert [c for _, c in chunks] == [b'event: tick\nid: 0\ndata: {"i":0}\n\n',
                                      b'event: tick\nid: 1\ndata: {"i":1}\n\n',
                                      b'event: tick\nid: 2\ndata: {"i":2}\n\n',
                                      b"data: done\n\n"]
    times = [t for t, _ in chunks]
    assert times[1] - times[0] > 0.2 and times[2] - times[1] > 0.2   # one chunk per event, at once


def test_sse_failing_mid_stream_ends_with_an_error_event_and_no_final_chunk(start):
    rt = start("responses:ticks")
    status, _, chunks, complete = stream_lines(rt.url, {"n": 2, "fail": True})
    assert status == 200 and not complete
    assert [c for _, c in chunks][-2:] == [
        b"data: done\n\n", b'event: error\ndata: {"code":"function_error","message":"ValueError: boom"}\n\n']
    assert rt.wait_log("stream aborted")["code"] == "function_error"


def test_sse_failing_before_its_first_event_is_an_error_event_too(start):
    rt = start("responses:fails_at_once")
    status, headers, chunks, complete = stream_lines(rt.url, {})
    assert status == 200 and headers["Content-Type"] == "text/event-stream" and not complete
    assert [c for _, c in chunks] == [wire.sse_error_event("function_error", "ValueError: before any event")]


def test_sse_timeout_is_an_error_event(start):
    rt = start("responses:aticks", GANTRY_TIMEOUT="0.5")
    status, headers, chunks, complete = stream_lines(rt.url, {"n": 10, "every": 0.2})
    assert status == 200 and not complete
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert chunks[0][1] == b'data: {"i":0}\n\n'
    code, message = wire.parse_sse_error(chunks[-1][1])
    assert code == "timeout" and message.startswith("the invocation exceeded its 0.")


@pytest.mark.parametrize("handler, expected", [
    ("responses:plain_fails", [b"line 1\n", b"line 2\n",
                               b'\x1e{"error":{"code":"function_error","message":"ValueError: boom"}}\n']),
    # the frame starts a line of its own
    ("responses:partial_line_fails", [b"no newline",
                                      b'\n\x1e{"error":{"code":"function_error","message":"ValueError: boom"}}\n']),
    ("responses:records_fail", [b'{"i":0}\n',
                                b'\x1e{"error":{"code":"function_error","message":"ValueError: boom"}}\n']),
])
def test_a_plain_stream_failing_mid_way_ends_with_the_error_frame(start, handler, expected):
    rt = start(handler)
    status, _, chunks, complete = stream_lines(rt.url, {})
    assert status == 200 and not complete
    assert [c for _, c in chunks] == expected
    assert wire.parse_stream_error(expected[-1].lstrip(b"\n")) == ("function_error", "ValueError: boom")


def test_example_events(start):
    rt = start("main:handle", code_dir=EXAMPLES / "events")
    status, headers, chunks, complete = stream_lines(rt.url, {"count": 2, "delay": 0})
    assert status == 200 and complete and headers["Content-Type"] == "text/event-stream"
    assert b"".join(c for _, c in chunks) == (b'event: tick\nid: 0\ndata: {"i":0,"of":2}\n\n'
                                             b'event: tick\nid: 1\ndata: {"i":1,"of":2}\n\n'
                                             b"data: done\n\n")
    status, _, chunks, complete = stream_lines(rt.url, {"count": 1, "fail": True})
    assert status == 200 and not complete
    assert chunks[-1][1] == wire.sse_error_event("function_error", "RuntimeError: asked to fail")

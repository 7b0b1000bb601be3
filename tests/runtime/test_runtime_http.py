"""The runtime's own HTTP/1.1 server (gantry_runtime.httpserver, docs/runtime.md "The HTTP
server"), run for real as ``python -m gantry_runtime`` and spoken to over raw sockets: what
a web framework used to do for it and the gateway relies on."""
from __future__ import annotations

import json
import socket
import time

import pytest

from test_runtime_server import health

pytestmark = pytest.mark.timeout(60)


def _connect(rt) -> socket.socket:
    return socket.create_connection(("127.0.0.1", rt.port), timeout=10)


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body off ``sock`` (``buf`` keeps what follows it)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a whole head: {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside the body")
        rest += data
    buf[:] = rest[length:]
    return status, headers, rest[:length]


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order_on_one_connection(start):
    rt = start("echo:handle")
    sock, buf = _connect(rt), bytearray()
    sock.sendall(b"".join(_post("/invoke", json.dumps({"n": i}).encode(),
                                f"X-Gantry-Invocation-Id: p{i}\r\n") for i in range(3))
                 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for i in range(3):
        status, headers, body = _read_response(sock, buf)
        assert status == 200 and json.loads(body)["event"] == {"n": i}
        assert headers["x-gantry-invocation-id"] == f"p{i}"
    status, _, body = _read_response(sock, buf)
    assert status == 200 and json.loads(body)["status"] == "ready"
    sock.close()


def test_a_503_goes_before_the_body_and_the_connection_stays_usable(start):
    rt = start("asyncfn:watch_cancel", GANTRY_CONCURRENCY="1")
    holder = _connect(rt)
    holder.sendall(_post("/invoke", b'{"seconds": 20}'))
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    sock, buf = _connect(rt), bytearray()
    body = b'{"seconds": 0}'
    # the head only: the answer comes though the body has not been sent
    sock.sendall(_post("/invoke", body)[:-len(body)])
    status, headers, answer = _read_response(sock, buf)
    assert status == 503 and json.loads(answer)["error"]["code"] == "at_capacity"
    assert headers["retry-after"] == "1"
    holder.close()                  # frees the slot (the handler is cancelled)
    rt.wait_log("handler cancelled")
    sock.sendall(body)              # the unread body is read off and dropped ...
    sock.sendall(_post("/invoke", body))   # ... and the next request on it is served
    status, _, answer = _read_response(sock, buf)
    assert status == 200 and json.loads(answer) == {"slept": True}
    sock.close()


def test_a_chunked_body_over_the_limit_is_413_while_it_is_read(start):
    rt = start("echo:handle", GANTRY_MAX_BODY="100")
    sock, buf = _connect(rt), bytearray()
    chunk = b"x" * 80
    sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%b\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n")
    status, _, answer = _read_response(sock, buf)
    assert status == 413 and json.loads(answer)["error"]["code"] == "too_large"
    sock.close()
    assert health(rt.url)[0] == 200


def test_a_malformed_request_is_a_json_400_and_the_connection_closes(start):
    rt = start("echo:handle")
    sock, buf = _connect(rt), bytearray()
    sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    status, headers, answer = _read_response(sock, buf)
    assert status == 400 and json.loads(answer)["error"]["code"] == "bad_request"
    assert headers["connection"] == "close" and _closed(sock)
    sock.close()


def test_connection_close_and_http_1_0_end_the_connection_after_the_answer(start):
    rt = start("echo:handle")
    for request in (_post("/invoke", b"{}", "Connection: close\r\n"),
                    b"GET /healthz HTTP/1.0\r\n\r\n"):
        sock, buf = _connect(rt), bytearray()
        sock.sendall(request)
        status, headers, _ = _read_response(sock, buf)
        assert status == 200 and headers["connection"] == "close" and _closed(sock)
        sock.close()


def test_expect_100_continue_is_answered_when_the_body_is_read(start):
    rt = start("echo:handle")
    sock, buf = _connect(rt), bytearray()
    body = b'{"a": 1}'
    sock.sendall(_post("/invoke", body, "Expect: 100-continue\r\n")[:-len(body)])
    status, _, _ = _read_response(sock, buf)
    assert status == 100
    sock.sendall(body)
    status, _, answer = _read_response(sock, buf)
    assert status == 200 and json.loads(answer)["event"] == {"a": 1}
    sock.close()


def test_the_body_of_an_early_answer_is_read_off_before_the_connection_closes(start):
    # A client still sending when the server closes gets a reset, which can throw away the
    # answer it has not read: so the rest of the body is read (and dropped) first.
    rt = start("asyncfn:watch_cancel", GANTRY_CONCURRENCY="1")
    holder = _connect(rt)
    holder.sendall(_post("/invoke", b'{"seconds": 20}'))
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    sock, buf = _connect(rt), bytearray()
    body = b"x" * (4 * 2**20)
    sock.sendall(_post("/invoke", body, "Connection: close\r\n")[:-len(body)])
    status, headers, answer = _read_response(sock, buf)
    assert status == 503 and headers["connection"] == "close"
    sock.sendall(body)           # all of it is taken (no reset) ...
    assert _closed(sock)         # ... and then the connection closes
    sock.close()
    holder.close()

"""The in-container runtime, run for real: ``python -m gantry_runtime`` as a subprocess on a free
loopback port, spoken to over HTTP/1.1. Handlers come from ``functions/`` next to this file.
Every wait is bounded."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gantry.up import free_port
from gantry_runtime import wire

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = Path(__file__).resolve().parent / "functions"




class Runtime:
    """One runtime process; ``url`` once it listens; stdout (JSON logs) and stderr kept in files."""

    def __init__(self, tmp_path: Path, handler: str, code_dir: Path = FUNCTIONS, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out_path = tmp_path / f"stdout-{self.port}.log"
        self.err_path = tmp_path / f"stderr-{self.port}.log"
        full_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "runtime"),
            "PYTHONUNBUFFERED": "1",
            "GANTRY_CODE_DIR": str(code_dir),
            "GANTRY_HANDLER": handler,
            "GANTRY_FUNCTION": "fixture",
            "GANTRY_HOST": "127.0.0.1",
            "GANTRY_PORT": str(self.port),
            **env,
        }
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "gantry_runtime"], env=full_env,
                                         stdout=out, stderr=err, cwd=str(tmp_path))

    def wait_listening(self, timeout: float = 15) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}: {self.stderr()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("runtime did not start listening")

    def wait_ready(self, timeout: float = 15) -> None:
        self.wait_listening(timeout)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status, body = health(self.url)
            if status == 200 and body["status"] == "ready":
                return
            time.sleep(0.05)
        raise AssertionError("runtime did not become ready")

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("runtime did not stop after SIGTERM")

    def logs(self) -> list[dict]:
        lines = self.out_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_log(self, msg: str, timeout: float = 5) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.logs():
                if rec.get("msg") == msg:
                    return rec
            time.sleep(0.05)
        raise AssertionError(f"no log line {msg!r} in {self.stdout()}")


@pytest.fixture
def start(tmp_path):
    """start(handler, **env) -> a ready Runtime; every one started is stopped at teardown."""
    started: list[Runtime] = []

    def _start(handler: str, ready: bool = True, code_dir: Path = FUNCTIONS, **env: str) -> Runtime:
        rt = Runtime(tmp_path, handler, code_dir, **env)
        started.append(rt)
        if ready:
            rt.wait_ready()
        return rt

    yield _start
    for rt in started:
        if rt.proc.poll() is None:
            rt.proc.send_signal(signal.SIGTERM)
            try:
                rt.proc.wait(5)
            except subprocess.TimeoutExpired:
                rt.proc.kill()
                rt.proc.wait(5)


def request(url: str, method: str = "POST", path: str = "/invoke", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def invoke(url: str, event, headers: dict[str, str] | None = None, timeout: float = 10):
    status, hdrs, body = request(url, body=json.dumps(event).encode(), timeout=timeout,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    return status, hdrs, body


def health(url: str) -> tuple[int, dict]:
    status, _, body = request(url, "GET", "/healthz", timeout=5)
    return status, json.loads(body)


def wait_idle(rt: Runtime, timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = health(rt.url)[1]
        if info["inflight"] == 0 and info["stuck"] == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"runtime still busy: {health(rt.url)}")


def stream_lines(url: str, event) -> tuple[int, dict, list[tuple[float, bytes]], bool]:
    """POST over a raw socket and decode the chunked body by hand, noting when each chunk
    arrived (monotonic). Returns (status, headers, [(time, chunk)], complete): complete is
    False when the connection closed before the terminating zero-length chunk (http.client
    would hide that)."""
    body = json.dumps(event).encode()
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10)
    try:
        sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: runtime\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        f = sock.makefile("rb")
        status = int(f.readline().split()[1])
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip()] = value.strip()
        assert headers.get("Transfer-Encoding") == "chunked", headers
        chunks: list[tuple[float, bytes]] = []
        while True:
            size_line = f.readline()
            if not size_line.endswith(b"\r\n"):
                return status, headers, chunks, False    # cut off
            size = int(size_line, 16)
            data = f.read(size + 2)
            if len(data) < size + 2:
                return status, headers, chunks, False
            if size == 0:
                return status, headers, chunks, True
            chunks.append((time.monotonic(), data[:-2]))
    finally:
        sock.close()


# -- results of each kind --------------------------------------------------------------------

def test_sync_json_handler_sees_event_and_ctx(start):
    rt = start("echo:handle", GANTRY_TIMEOUT="20")
    t0 = time.time()
    status, headers, body = invoke(rt.url, {"a": [1, 2]}, {"X-Gantry-Invocation-Id": "inv-1",
                                                           "X-Gantry-Tenant": "acme", "X-Gantry-Timeout": "5"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Gantry-Invocation-Id"] == "inv-1"
    assert float(headers["X-Gantry-Duration-Ms"]) >= 0
    out = json.loads(body)
    assert out["event"] == {"a": [1, 2]}
    assert (out["invocation_id"], out["tenant"], out["function"]) == ("inv-1", "acme", "fixture")
    assert 3 < out["remaining"] <= 5                       # min(header 5, GANTRY_TIMEOUT 20)
    assert t0 + 3 < out["deadline"] <= time.time() + 5
    # Without the header an id is made up, and a +json type is JSON too.
    status, headers, body = request(rt.url, body=b'"x"', headers={"Content-Type": "application/vnd.x+json"})
    assert status == 200 and len(headers["X-Gantry-Invocation-Id"]) == 32
    assert json.loads(body)["event"] == "x"
    # Anything else arrives as bytes.
    status, _, body = request(rt.url, body=b"\xff\x00", headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and json.loads(body)["event"] == {"bytes": 2}
    # The ctx logger writes JSON lines that carry the invocation id; one access line per call.
    line = next(r for r in rt.logs() if r["msg"] == "echo called" and r.get("invocation_id") == "inv-1")
    assert line["function"] == "fixture" and line["tenant"] == "acme" and line["kind"] == "dict"
    access = next(r for r in rt.logs() if r["msg"] == "invoke" and r.get("invocation_id") == "inv-1")
    assert access["status"] == 200 and access["duration_ms"] >= 0 and "ts" in access


def test_keep_alive_serves_several_requests_on_one_connection(start):
    rt = start("echo:pid")
    conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("POST", "/invoke", b"{}", {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == rt.proc.pid
            assert not resp.will_close
    finally:
        conn.close()


def test_async_handler(start):
    rt = start("asyncfn:handle")
    status, _, body = invoke(rt.url, {"k": "v"})
    assert status == 200 and json.loads(body) == {"async": True, "event": {"k": "v"}}


@pytest.mark.parametrize("handler, body, ctype, expected", [
    ("results:raw", b"\x00\x01\x02", "application/octet-stream", b"\x02\x01\x00"),
    ("results:text", b'{"name": "ada"}', "text/plain; charset=utf-8", "héllo ada".encode()),
    ("results:number", b"{}", "application/json", b"42"),
    ("results:nothing", b"{}", "application/json", b"null"),
])
def test_result_types(start, handler, body, ctype, expected):
    rt = start(handler)
    content_type = "application/octet-stream" if handler == "results:raw" else "application/json"
    status, headers, out = request(rt.url, body=body, headers={"Content-Type": content_type})
    assert status == 200
    assert headers["Content-Type"] == ctype
    assert out == expected


def test_unsupported_result_is_500_bad_result_naming_the_type(start):
    rt = start("results:unsupported")
    status, headers, body = invoke(rt.url, {})
    err = json.loads(body)["error"]
    assert status == 500 and err["code"] == "bad_result" and "'set'" in err["message"]
    assert "X-Gantry-Invocation-Id" in headers and "X-Gantry-Duration-Ms" in headers


# -- streams ---------------------------------------------------------------------------------

def test_sync_generator_streams_each_line_as_produced(start):
    rt = start("streams:lines")
    t0 = time.monotonic()
    status, headers, lines, complete = stream_lines(rt.url, {"n": 4, "every": 0.3})
    assert status == 200 and complete
    assert headers["X-Gantry-Stream"] == "1"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Transfer-Encoding"] == "chunked"
    assert [line for _, line in lines] == [f"line {i}\n".encode() for i in range(4)]
    # The generator needs >= 0.9 s; its first line must arrive long before that.
    first, last = lines[0][0] - t0, lines[-1][0] - t0
    assert first < 0.5 and last - first >= 0.75, (first, last)


def test_async_generator_streams_ndjson(start):
    rt = start("streams:records")
    t0 = time.monotonic()
    status, headers, lines, complete = stream_lines(rt.url, {"n": 3, "every": 0.3})
    assert status == 200 and complete
    assert headers["Content-Type"] == "application/x-ndjson" and headers["X-Gantry-Stream"] == "1"
    assert [json.loads(line) for _, line in lines] == [{"i": 0}, {"i": 1}, {"i": 2}]
    first, last = lines[0][0] - t0, lines[-1][0] - t0
    assert first < 0.4 and last - first >= 0.5, (first, last)


def test_bytes_stream_and_empty_stream(start):
    rt = start("streams:blobs")
    status, headers, body = invoke(rt.url, {})
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert body == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
    rt2 = start("streams:empty")
    status, headers, body = invoke(rt2.url, {})
    assert status == 200 and body == b"" and headers["X-Gantry-Stream"] == "1"


@pytest.mark.parametrize("handler, code", [("streams:fails", "function_error"),
                                            ("streams:bad_item", "bad_result")])
def test_failure_mid_stream_truncates_the_stream(start, handler, code):
    rt = start(handler)
    status, _, lines, complete = stream_lines(rt.url, {})
    assert status == 200          # the status was sent before the failure ...
    assert not complete           # ... but no terminating chunk: never a silent success
    expected = [b"first\n", b"second\n"] if handler == "streams:fails" else [b"ok\n"]
    message = ("ValueError: mid-stream" if handler == "streams:fails"
               else "unsupported stream item type 'set'")
    # ... and the last chunk says why: RS, the error body, LF (wire.stream_error_frame)
    assert [chunk for _, chunk in lines] == [*expected, wire.stream_error_frame(code, message)]
    aborted = rt.wait_log("stream aborted")
    assert aborted["code"] == code
    assert stream_lines(rt.url, {})[0] == 200  # the same process still serves
    wait_idle(rt)  # the early-closed generator is closed in a thread, holding its slot till then


def test_timeout_mid_stream_truncates(start):
    rt = start("streams:records", GANTRY_TIMEOUT="0.5")
    status, _, lines, complete = stream_lines(rt.url, {"n": 10, "every": 0.2})
    assert status == 200 and not complete
    assert 1 <= len(lines) < 10
    assert rt.wait_log("stream aborted")["code"] == "timeout"


# -- errors ----------------------------------------------------------------------------------

def test_crash_is_500_with_type_and_message_and_process_keeps_serving(start):
    rt = start("crash:handle")
    status, headers, body = invoke(rt.url, {"fail": True}, {"X-Gantry-Invocation-Id": "crash-1"})
    assert status == 500
    assert json.loads(body) == {"error": {"code": "function_error", "message": "ValueError: boom"}}
    assert b"Traceback" not in body and headers["X-Gantry-Invocation-Id"] == "crash-1"
    logged = next(r for r in rt.logs() if r["msg"] == "function error")
    assert logged["invocation_id"] == "crash-1" and "Traceback" in logged["traceback"]
    status, _, body = invoke(rt.url, {"fail": False})
    assert status == 200 and json.loads(body)["pid"] == rt.proc.pid


def test_sys_exit_in_a_handler_is_a_function_error_not_a_shutdown(start):
    rt = start("crash:exits")
    status, _, body = invoke(rt.url, {})
    assert status == 500 and json.loads(body)["error"] == {"code": "function_error", "message": "SystemExit: 7"}
    assert health(rt.url)[0] == 200 and rt.proc.poll() is None


def test_bad_requests(start):
    rt = start("echo:handle", GANTRY_MAX_BODY="100")
    status, _, body = request(rt.url, body=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    status, _, body = request(rt.url, body=b"x" * 101, headers={"Content-Type": "application/octet-stream"})
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    status, _, body = invoke(rt.url, {}, {"X-Gantry-Timeout": "soon"})
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    status, _, body = request(rt.url, "GET", "/nope")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    assert health(rt.url)[1]["inflight"] == 0


def test_async_timeout_is_504_and_cancels(start):
    rt = start("asyncfn:watch_cancel", GANTRY_TIMEOUT="0.4")
    t0 = time.monotonic()
    status, headers, body = invoke(rt.url, {"seconds": 10})
    assert status == 504 and json.loads(body)["error"]["code"] == "timeout"
    assert time.monotonic() - t0 < 3 and float(headers["X-Gantry-Duration-Ms"]) >= 350
    rt.wait_log("handler cancelled")
    assert health(rt.url)[1] | {} == {"status": "ready", "function": "fixture", "inflight": 0,
                                      "concurrency": 4, "stuck": 0}
    # The gateway's X-Gantry-Timeout can only lower the limit.
    t0 = time.monotonic()
    assert invoke(rt.url, {"seconds": 10}, {"X-Gantry-Timeout": "0.1"})[0] == 504
    assert time.monotonic() - t0 < 0.35


def test_sync_timeout_holds_the_slot_until_the_thread_returns(start):
    rt = start("slow:sync", GANTRY_TIMEOUT="0.3", GANTRY_CONCURRENCY="1")
    status, _, body = invoke(rt.url, {"seconds": 1.5})
    assert status == 504 and json.loads(body)["error"]["code"] == "timeout"
    code, info = health(rt.url)
    assert code == 200 and info["stuck"] == 1 and info["inflight"] == 1
    status, headers, body = invoke(rt.url, {"seconds": 0})
    assert status == 503 and json.loads(body)["error"]["code"] == "at_capacity"
    assert headers["Retry-After"] == "1"
    wait_idle(rt)
    assert invoke(rt.url, {"seconds": 0})[0] == 200


def test_concurrency_cap_answers_503_at_once(start):
    rt = start("slow:aio", GANTRY_CONCURRENCY="2")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(invoke(rt.url, {"seconds": 1})[0]))
               for _ in range(2)]
    for t in threads:
        t.start()
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 2 and time.monotonic() < end:
        time.sleep(0.02)
    t0 = time.monotonic()
    status, headers, body = invoke(rt.url, {"seconds": 0})
    assert status == 503 and time.monotonic() - t0 < 0.5
    assert json.loads(body)["error"]["code"] == "at_capacity" and headers["Retry-After"] == "1"
    for t in threads:
        t.join(10)
    assert results == [200, 200]


# -- lifecycle -------------------------------------------------------------------------------

def test_health_says_starting_until_the_handler_is_imported(start):
    rt = start("slow_import:handle", ready=False, SLOW_IMPORT_SECONDS="1.5")
    rt.wait_listening()
    status, body = health(rt.url)
    assert status == 503 and body["status"] == "starting"
    status, headers, body = invoke(rt.url, {})
    assert status == 503 and json.loads(body)["error"]["code"] == "starting"
    rt.wait_ready()
    status, body = health(rt.url)
    assert body == {"status": "ready", "function": "fixture", "inflight": 0, "concurrency": 4, "stuck": 0}
    assert invoke(rt.url, {})[0] == 200
    assert [r["msg"] for r in rt.logs()][:2] == ["start", "ready"]


@pytest.mark.parametrize("handler, error", [
    ("broken_import:handle", "broken_import.py:2: ModuleNotFoundError: No module named 'gantry_no_such_module'"),
    ("bad_syntax:handle", "bad_syntax.py:3: SyntaxError: expected ':'"),
    ("echo:missing", "handler 'echo:missing': module 'echo' has no attribute 'missing' (found: handle, pid)"),
    ("slow_import:NOT_CALLABLE", "handler 'slow_import:NOT_CALLABLE': slow_import.NOT_CALLABLE is an int, "
                                 "not a callable"),
])
def test_import_failure_exits_3_with_one_clear_line(start, handler, error):
    rt = start(handler, ready=False, SLOW_IMPORT_SECONDS="0")
    assert rt.proc.wait(15) == 3
    failed = [r for r in rt.logs() if r["msg"] == "handler import failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    # the structured start-failure line the worker reads (wire.StartFailure): the cause, where
    assert failed[0]["event"] == "import_failed"
    assert failed[0]["error"] == error and failed[0]["handler"] == handler
    assert "Traceback" in rt.stderr()


@pytest.mark.parametrize("env, needle", [
    ({"GANTRY_HANDLER": ""}, "GANTRY_HANDLER is required"),
    ({"GANTRY_HANDLER": "no-colon"}, "GANTRY_HANDLER: expected"),
    ({"GANTRY_CONCURRENCY": "many"}, "GANTRY_CONCURRENCY: expected a whole number"),
    ({"GANTRY_TIMEOUT": "-1"}, "GANTRY_TIMEOUT: expected"),
])
def test_bad_configuration_exits_2(start, env, needle):
    rt = start("echo:handle", ready=False, **env)
    assert rt.proc.wait(15) == 2
    assert needle in rt.stderr()
    assert any(r["msg"] == "invalid configuration" and needle in r["error"] for r in rt.logs())


def test_sigterm_drains_inflight_work_then_exits_0(start):
    rt = start("slow:aio", GANTRY_DRAIN_GRACE="10")
    result: dict = {}

    def slow_call():
        result["slow"] = invoke(rt.url, {"seconds": 1.5})

    t = threading.Thread(target=slow_call)
    t.start()
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    rt.proc.send_signal(signal.SIGTERM)
    rt.wait_log("draining")
    try:
        status, _, body = invoke(rt.url, {"seconds": 0}, timeout=5)
        assert status == 503 and json.loads(body)["error"]["code"] == "draining"
        assert health(rt.url) == (503, {"status": "draining", "function": "fixture", "inflight": 1,
                                        "concurrency": 4, "stuck": 0})
    except (urllib.error.URLError, ConnectionError):
        pass  # or refused: both tell the gateway to go elsewhere
    t.join(10)
    status, _, body = result["slow"]
    assert status == 200 and json.loads(body) == {"slept": 1.5}
    assert rt.proc.wait(10) == 0
    msgs = [r["msg"] for r in rt.logs()]
    assert msgs.index("draining") < msgs.index("stopped")


def test_drain_grace_bounds_the_wait(start):
    rt = start("slow:sync", GANTRY_DRAIN_GRACE="0.5", GANTRY_TIMEOUT="60")
    t = threading.Thread(target=lambda: _swallow(lambda: invoke(rt.url, {"seconds": 30}, timeout=10)))
    t.start()
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    t0 = time.monotonic()
    assert rt.stop() == 0                  # does not wait for the 30 s thread
    assert time.monotonic() - t0 < 5
    assert any(r["msg"] == "drain grace elapsed; cancelling what is left" for r in rt.logs())
    t.join(10)


def _swallow(fn):
    try:
        fn()
    except Exception:
        pass


def test_client_disconnect_cancels_the_invocation(start):
    rt = start("asyncfn:watch_cancel")
    sock = socket.create_connection(("127.0.0.1", rt.port), timeout=5)
    body = b'{"seconds": 30}'
    sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    sock.close()
    rt.wait_log("handler cancelled")
    access = rt.wait_log("invoke")
    assert access["status"] == 499 and access["code"] == "cancelled"
    assert health(rt.url)[1]["inflight"] == 0


@pytest.mark.parametrize("handler, closed", [("streams:records", "async generator closed"),
                                              ("streams:lines", "generator closed")])
def test_client_disconnect_closes_a_stream(start, handler, closed):
    rt = start(handler)
    conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=10)
    conn.request("POST", "/invoke", json.dumps({"n": 100, "every": 0.1}), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline()
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    rt.wait_log(closed)
    wait_idle(rt)


# -- the examples (those without third-party dependencies; Docker tests cover the rest) -------

EXAMPLES = ROOT / "examples"


def test_example_hello(start):
    rt = start("main:handle", code_dir=EXAMPLES / "hello")
    status, _, body = invoke(rt.url, {"name": "ada"})
    assert status == 200 and json.loads(body) == {"hello": "ada", "echo": {"name": "ada"}}
    assert json.loads(invoke(rt.url, {})[2]) == {"hello": "world", "echo": {}}
    # extra={"name": ...} clashes with LogRecord.name: ctx.logger renames it instead of raising.
    assert rt.wait_log("greeting")["name_"] == "ada"


def test_example_stream(start):
    rt = start("main:handle", code_dir=EXAMPLES / "stream")
    status, headers, chunks, complete = stream_lines(rt.url, {"count": 3})
    assert status == 200 and complete and headers["X-Gantry-Stream"] == "1"
    assert [c for _, c in chunks] == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n"]


def test_example_echo_bytes(start):
    rt = start("main:handle", code_dir=EXAMPLES / "echo-bytes")
    status, headers, body = request(rt.url, body=b"abc", headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and body == b"cba" and headers["Content-Type"] == "application/octet-stream"


# --- async attempts (gantry_runtime.detached) ----------------------------------------------

def _attempt(inv_id: str, attempt: int) -> dict[str, str]:
    return {wire.INVOCATION_ID: inv_id, wire.ATTEMPT: str(attempt)}


def _runs(rt: Runtime, inv_id: str) -> int:
    return sum(1 for rec in rt.logs() if rec.get("msg") == "invoke" and rec.get("invocation_id") == inv_id)


def test_an_async_attempt_outlives_its_connection_and_is_told_again_without_running_again(start):
    rt = start("slow:aio")
    sock = socket.create_connection(("127.0.0.1", rt.port), timeout=5)
    body = b'{"seconds": 1}'
    head = "".join(f"{k}: {v}\r\n" for k, v in _attempt("a" * 32, 1).items())
    sock.sendall(b"POST /invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head.encode()
                 + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    sock.close()             # the dispatcher is gone; an ordinary invocation would be cancelled here
    status, hdrs, out = invoke(rt.url, {"seconds": 1}, _attempt("a" * 32, 1))   # joins the run
    assert status == 200 and json.loads(out) == {"slept": 1} and hdrs[wire.ATTACHED] == "1"
    again = invoke(rt.url, {"seconds": 1}, _attempt("a" * 32, 1))              # told again, at once
    assert again[0] == 200 and again[1][wire.ATTACHED] == "1" and json.loads(again[2]) == {"slept": 1}
    wait_idle(rt)
    assert _runs(rt, "a" * 32) == 1
    # the next attempt of the same invocation is a new run
    status, hdrs, out = invoke(rt.url, {"seconds": 0}, _attempt("a" * 32, 2))
    assert status == 200 and wire.ATTACHED not in hdrs and _runs(rt, "a" * 32) == 2


def test_concurrent_asks_for_one_attempt_share_one_run(start):
    rt = start("slow:sync")
    results: list[tuple[int, dict, bytes]] = []

    def ask() -> None:
        results.append(invoke(rt.url, {"seconds": 0.5}, _attempt("b" * 32, 1)))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(r[0] for r in results) == [200, 200, 200]
    assert sum(1 for r in results if r[1].get(wire.ATTACHED) == "1") == 2
    wait_idle(rt)
    assert _runs(rt, "b" * 32) == 1


def test_an_attempt_refused_at_capacity_is_not_kept(start):
    rt = start("slow:sync", GANTRY_CONCURRENCY="1")
    holder = threading.Thread(target=invoke, args=(rt.url, {"seconds": 1}))
    holder.start()
    end = time.monotonic() + 5
    while health(rt.url)[1]["inflight"] < 1 and time.monotonic() < end:
        time.sleep(0.02)
    refused = invoke(rt.url, {"seconds": 0}, _attempt("c" * 32, 1))
    assert refused[0] == 503
    holder.join(10)
    status, hdrs, _ = invoke(rt.url, {"seconds": 0}, _attempt("c" * 32, 1))
    assert status == 200 and wire.ATTACHED not in hdrs      # it ran now: the 503 was not its outcome

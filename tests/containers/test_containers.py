"""Function containers on the real engine, run with the platform's hardened settings:
every handler kind, errors, timeouts, import failures and graceful drain."""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import pytest

from gantry_runtime.wire import INSTANCE_KEY

from .conftest import FUNCTIONS, KEY, http, invoke

pytestmark = pytest.mark.docker
KINDS = os.path.join(FUNCTIONS, "kinds")


def test_json_sync_handler_runs_as_non_root(kinds_image, start):
    inst = start(kinds_image, KINDS)
    status, headers, body = invoke(inst.url, {"a": [1, 2]})
    assert status == 200
    data = json.loads(body)
    assert data["event"] == {"a": [1, 2]}
    assert data["uid"] == 10001
    assert headers["X-Gantry-Invocation-Id"] == data["invocation_id"]


def test_async_text_and_bytes(kinds_image, start):
    text = start(kinds_image, KINDS, GANTRY_HANDLER="main:async_text")
    status, headers, body = invoke(text.url, {"name": "ada"})
    assert (status, body) == (200, b"hello ada")
    assert headers["Content-Type"].startswith("text/plain")
    raw = start(kinds_image, KINDS, GANTRY_HANDLER="main:raw")
    status, headers, body = http("POST", f"{raw.url}/invoke", b"\x00\x01\x02", {"Content-Type": "application/octet-stream"})
    assert (status, body) == (200, b"\x02\x01\x00")
    assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("handler, expected", [
    ("main:gen", [b"line 0\n", b"line 1\n", b"line 2\n"]),
    ("main:agen", [b'{"i": 0}\n', b'{"i": 1}\n', b'{"i": 2}\n']),
])
def test_generators_stream_first_chunk_before_the_end(kinds_image, start, handler, expected):
    inst = start(kinds_image, KINDS, GANTRY_HANDLER=handler)
    req = urllib.request.Request(f"{inst.url}/invoke", data=json.dumps({"n": 3, "every": 0.3}).encode(),
                                 headers={"Content-Type": "application/json", INSTANCE_KEY: KEY})
    sent = time.monotonic()
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["X-Gantry-Stream"] == "1"
        first = resp.readline()
        first_at = time.monotonic() - sent
        rest = resp.read()
        last_at = time.monotonic() - sent
    chunks = [first] + [line + b"\n" for line in rest.split(b"\n") if line]
    assert [c.replace(b" ", b"") for c in chunks] == [c.replace(b" ", b"") for c in expected]
    assert first_at < 0.75 and last_at >= 0.85       # three 0.3 s steps: the first arrives after one


def test_crash_is_500_naming_the_error_and_the_container_keeps_serving(kinds_image, start):
    inst = start(kinds_image, KINDS, GANTRY_HANDLER="main:crash")
    status, _, body = invoke(inst.url, {"fail": True})
    assert status == 500
    error = json.loads(body)["error"]
    assert error["code"] == "function_error"
    assert error["message"] == "ValueError: boom"
    assert "Traceback" not in body.decode()
    status, _, body = invoke(inst.url, {"fail": False})
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert "Traceback" in inst.logs()                  # the traceback goes to the log instead


def test_timeout_is_504(kinds_image, start):
    inst = start(kinds_image, KINDS, GANTRY_HANDLER="main:slow")  # the manifest's timeout is 2 s
    started = time.monotonic()
    status, _, body = invoke(inst.url, {"seconds": 10})
    assert status == 504 and json.loads(body)["error"]["code"] == "timeout"
    assert time.monotonic() - started < 5
    assert invoke(inst.url, {"seconds": 0})[0] == 200


def test_root_filesystem_is_read_only(kinds_image, start):
    inst = start(kinds_image, KINDS, GANTRY_HANDLER="main:write_root")
    status, _, body = invoke(inst.url, {})
    assert status == 200 and json.loads(body)["error"] in ("OSError", "PermissionError")


def test_import_error_is_refused_by_the_build(docker_client):
    from gantry.build import HandlerCheckFailed, build_function

    directory = os.path.join(FUNCTIONS, "broken-import")
    label = {"label": "gantry.function=broken-import"}
    before = {i.id for i in docker_client.images.list(all=True, filters=label)}
    with pytest.raises(HandlerCheckFailed) as failed:
        build_function(docker_client, directory)
    assert str(failed.value) == "main.py:1: ModuleNotFoundError: No module named 'not_a_module_anywhere'"
    # nothing deployable is left behind: no new image, tagged or not
    assert {i.id for i in docker_client.images.list(all=True, filters=label)} <= before


def test_import_error_exits_non_zero_with_a_clear_log(kinds_image, start):
    inst = start(kinds_image, KINDS, wait=False, GANTRY_HANDLER="main:no_such_handler")
    result = inst.container.wait(timeout=30)
    assert result["StatusCode"] == 3
    failed = [json.loads(line) for line in inst.logs().splitlines() if "handler import failed" in line]
    assert failed[0]["event"] == "import_failed"
    assert failed[0]["error"].startswith("handler 'main:no_such_handler': module 'main' has no attribute")


def test_sigterm_drains_in_flight_work(kinds_image, start):
    inst = start(kinds_image, KINDS, GANTRY_HANDLER="main:slow", GANTRY_TIMEOUT="10")
    result = {}

    def slow_call():
        result["slow"] = invoke(inst.url, {"seconds": 1.5}, timeout=10)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)                                  # the slow call is in flight
    inst.container.kill(signal="SIGTERM")
    time.sleep(0.2)
    try:
        refused = invoke(inst.url, {"seconds": 0}, timeout=5)[0]
    except OSError:
        refused = "connection refused"
    caller.join(10)
    assert refused in (503, "connection refused")
    status, _, body = result["slow"]
    assert (status, json.loads(body)) == (200, {"slept": 1.5})
    assert inst.container.wait(timeout=15)["StatusCode"] == 0

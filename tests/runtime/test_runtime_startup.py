"""The runtime's start-up (docs/runtime.md, "Start-up"): ``python -m gantry_runtime`` serves
without importing aiohttp at all (gantry_runtime.httpserver on httptools), and a handler that
uses aiohttp finds the whole package; the ready line the worker waits for (wire.is_ready_line) comes once /healthz says
ready.  Run for real, as a subprocess, with Python's own import log (PYTHONPROFILEIMPORTTIME)."""
from __future__ import annotations

import importlib.metadata
import json
import time

import pytest

from gantry_runtime import wire

from test_runtime_server import health, invoke  # the `start` fixture comes from conftest.py

pytestmark = pytest.mark.timeout(60)


def _imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines ("import time: SELF | CUMULATIVE | NAME")."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")
            and "|" in line}


def test_the_runtime_serves_without_importing_aiohttp(start):
    rt = start("echo:handle", PYTHONPROFILEIMPORTTIME="1")
    status, _, body = invoke(rt.url, {"x": 1})
    assert status == 200 and json.loads(body)["event"] == {"x": 1}
    assert rt.stop() == 0
    imported = _imported(rt.stderr())
    assert {"httptools", "gantry_runtime.httpserver", "gantry_runtime.server"} <= imported
    assert not [m for m in imported if m.split(".")[0] in ("aiohttp", "multidict", "yarl")], sorted(imported)


def test_a_handler_that_uses_aiohttp_gets_the_whole_package(start):
    rt = start("uses_aiohttp:handle")
    status, _, body = invoke(rt.url, {})
    assert status == 200, body
    assert json.loads(body) == {"version": importlib.metadata.version("aiohttp"),
                                "session": "aiohttp.client.ClientSession", "timeout": 1,
                                "client_imported": True}


def test_the_ready_line_comes_after_healthz_says_ready(start):
    rt = start("slow_import:handle", ready=False)
    rt.wait_listening()
    assert health(rt.url)[0] == 503
    line = None
    for _ in range(200):
        lines = [raw for raw in rt.stdout().splitlines() if wire.is_ready_line(raw)]
        if lines:
            line = lines[0]
            break
        assert health(rt.url)[0] == 503   # no ready line while it still says starting
        time.sleep(0.05)
    assert line is not None, rt.stdout()
    assert health(rt.url) == (200, health(rt.url)[1]) and health(rt.url)[1]["status"] == "ready"
    # every other line the runtime wrote is not taken for it
    assert [raw for raw in rt.stdout().splitlines() if wire.is_ready_line(raw)] == [line]


@pytest.mark.parametrize("line, expected", [
    ('{"ts": "t", "level": "info", "msg": "ready", "function": "f", "logger": "gantry.runtime", "import_ms": 1.0}',
     True),
    ('{"msg": "ready", "logger": "gantry.function"}', False),        # the handler's own logger
    ('{"msg": "start", "logger": "gantry.runtime"}', False),
    ('ready', False),
    ('{"msg": "ready", "logger": "gantry.runtime"', False),           # cut short
    ('["ready", "gantry.runtime"]', False),
])
def test_is_ready_line(line, expected):
    assert wire.is_ready_line(line) is expected

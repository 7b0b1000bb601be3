"""The runtime's start-up (docs/runtime.md, "Start-up"): ``python -m gantry_runtime`` imports
aiohttp's server without its client, and a handler that uses aiohttp still finds the whole
package; the ready line the worker waits for (wire.is_ready_line) comes once /healthz says
ready.  Run for real, as a subprocess, with Python's own import log (PYTHONPROFILEIMPORTTIME)."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gantry_runtime import wire

from test_runtime_server import ROOT, health, invoke, start  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(60)


def _imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines ("import time: SELF | CUMULATIVE | NAME")."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")
            and "|" in line}


def test_the_runtime_serves_without_importing_aiohttps_client(start):
    rt = start("echo:handle", PYTHONPROFILEIMPORTTIME="1")
    status, _, body = invoke(rt.url, {"x": 1})
    assert status == 200 and json.loads(body)["event"] == {"x": 1}
    assert rt.stop() == 0
    imported = _imported(rt.stderr())
    assert {"aiohttp.web_app", "aiohttp.web_protocol", "gantry_runtime.server"} <= imported
    assert not {"aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar"} & imported, sorted(
        m for m in imported if m.startswith("aiohttp"))


def test_a_handler_that_uses_aiohttp_gets_the_whole_package(start):
    rt = start("uses_aiohttp:handle")
    status, _, body = invoke(rt.url, {})
    assert status == 200, body
    assert json.loads(body) == {"version": importlib.metadata.version("aiohttp"),
                                "session": "aiohttp.client.ClientSession", "timeout": 1,
                                "same_web": True, "client_imported": True}


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


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path), env={"PYTHONPATH": f"{tmp_path}:{ROOT / 'runtime'}"})


def test_completing_the_package_happens_once_even_from_several_threads(tmp_path):
    out = _python("""
        import sys, threading
        from gantry_runtime import webimport
        assert webimport.import_server() is True
        assert "aiohttp.client" not in sys.modules
        import aiohttp
        got = []
        threads = [threading.Thread(target=lambda: got.append(aiohttp.ClientSession)) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        import aiohttp.client
        assert len(got) == 8 and all(g is aiohttp.client.ClientSession for g in got), got
        assert webimport.import_server() is False   # a second call: the package is imported already
        print("ok")
    """, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_server_that_cannot_be_imported_without_init_falls_back_to_the_whole_package(tmp_path):
    # A stand-in aiohttp whose web module needs what only __init__ sets, and whose __init__
    # imports web (as a future aiohttp might): run from inside web's import, __init__ finds
    # web half-imported and fails; the ordinary import is done instead and works.
    pkg = tmp_path / "aiohttp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__version__ = "0.0"\nINIT_RAN = True\nfrom . import client\n'
                                     'from .web import Application\n')
    (pkg / "client.py").write_text("X = 1\n")
    (pkg / "web.py").write_text("from . import INIT_RAN\nApplication = object\n")
    out = _python("""
        import sys
        from gantry_runtime import webimport
        assert webimport.import_server() is False
        import aiohttp, aiohttp.web
        assert aiohttp.INIT_RAN and aiohttp.client.X == 1 and aiohttp.web.Application is object
        assert aiohttp.Application is object
        print("ok")
    """, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


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

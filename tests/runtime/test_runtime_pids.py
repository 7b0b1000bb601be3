"""gantry_runtime.pids and /healthz against the pids limit, without Docker: the counters are
files in a temporary directory (tests/containers/test_pid_exhaustion.py runs the real thing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import aiohttp
from gantry.up import free_port

from gantry_runtime import pids
from gantry_runtime.server import STATE, create_app, start_server
from gantry_runtime.settings import Settings

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parents[2]


def counters(tmp_path, current, limit) -> str:
    (tmp_path / "pids.current").write_text(f"{current}\n")
    (tmp_path / "pids.max").write_text(f"{limit}\n")
    return str(tmp_path)


def test_usage_is_read_from_the_cgroup_files_and_no_limit_is_none(tmp_path):
    assert pids.find((str(tmp_path / "absent"), str(tmp_path))) is None
    place = counters(tmp_path, 12, 256)
    assert pids.find((str(tmp_path / "absent"), place)) == place
    assert pids.read(place) == pids.Usage(12, 256)
    counters(tmp_path, 12, "max")
    assert pids.read(place) is None and pids.read(None) is None
    (tmp_path / "pids.current").write_text("garbage")
    assert pids.read(place) is None


def test_exhausted_at_the_limit_and_reaping_lasts_a_while_after_pressure():
    assert pids.Usage(256, 256).exhausted and not pids.Usage(255, 256).exhausted
    pressure = pids.Pressure()
    assert not pressure.due(pids.Usage(127, 256), 0.0)               # below half: Popen.wait keeps its child
    assert not pressure.due(None, 0.0)
    assert pressure.due(pids.Usage(128, 256), 10.0)                  # half: reap ...
    assert pressure.due(pids.Usage(7, 256), 10.0 + pids.REAP_FOR - 1)   # ... and for a while after
    assert not pressure.due(pids.Usage(7, 256), 10.0 + pids.REAP_FOR)


REAP_SCRIPT = """
import json, os, time
from gantry_runtime import pids
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    children.append(pid)
deadline, reaped = time.monotonic() + 5, 0
while reaped < 3 and time.monotonic() < deadline:
    reaped += pids.reap()
    time.sleep(0.01)
again = pids.reap()
gone = []
for pid in children:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        gone.append(pid)
print(json.dumps({"reaped": reaped, "again": again, "gone": len(gone)}))
"""


def test_reap_collects_exited_children_and_never_blocks():
    # in a process of its own: reaping here would take other tests' children too
    out = subprocess.run([sys.executable, "-c", REAP_SCRIPT], capture_output=True, text=True, timeout=20,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "runtime")})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"reaped": 3, "again": 0, "gone": 3}


@pytest.mark.asyncio
async def test_healthz_is_503_exhausted_while_every_pid_is_taken(tmp_path):
    place = counters(tmp_path, 9, 256)
    app = create_app(Settings(handler="main:handle", function="fx"), pids_at=place)
    app[STATE].phase = "ready"
    port = free_port()
    server = await start_server(app, "127.0.0.1", port)
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "function": "fx", "pids": {"current": 9, "max": 256}}
        counters(tmp_path, 256, 256)
        resp = await client.get("/healthz")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "exhausted"
        assert body["pids"] == {"current": 256, "max": 256} and "256 of 256" in body["reason"]
        counters(tmp_path, 255, 256)
        assert (await client.get("/healthz")).status == 200
        app[STATE].phase = "draining"                                 # draining stays draining
        counters(tmp_path, 256, 256)
        resp = await client.get("/healthz")
        assert resp.status == 503 and (await resp.json())["status"] == "draining"
    await server.close()

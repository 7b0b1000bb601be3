"""Several gateway processes on one port (gateway.workers): real processes of
``python -m gantry.gateway`` against the test Redis, found through /healthz."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gantry.gateway.settings import GatewaySettings
from gantry.gateway.workers import next_delay, worker_identity
from gantry_runtime.config import SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_identity_per_worker():
    assert worker_identity("gw-a", "", 1, None) == ("gw-a", "")        # a lone gateway: unchanged
    assert worker_identity("gw-a", "", 4, 2) == ("gw-a-w2", "")        # HOSTNAME:PORT gets it in dispatch
    assert worker_identity("gw-a", "node1", 4, 0) == ("gw-a-w0", "node1-w0")
    s = GatewaySettings.from_env({"GANTRY_GATEWAY_WORKERS": "3", "GANTRY_GATEWAY_WORKER_INDEX": "1",
                                  "GANTRY_GATEWAY_ID": "edge", "GANTRY_DISPATCH_ID": "edge"})
    assert (s.workers, s.worker_index, s.gateway_id, s.dispatch_id) == (3, 1, "edge-w1", "edge-w1")
    assert [next_delay(n) for n in (1, 2, 5, 50)] == [0.5, 1.0, 10.0, 10.0]


@pytest.mark.parametrize("env, message", [
    ({"GANTRY_GATEWAY_WORKERS": "2", "GANTRY_GATEWAY_PORT": "0"}, "GANTRY_GATEWAY_WORKERS above 1 needs a fixed"),
    ({"GANTRY_GATEWAY_WORKERS": "0"}, "GANTRY_GATEWAY_WORKERS: expected a whole number from 1 to 64"),
    ({"GANTRY_GATEWAY_WORKERS": "65"}, "GANTRY_GATEWAY_WORKERS: expected a whole number from 1 to 64"),
])
def test_bad_worker_counts_are_refused(env, message):
    with pytest.raises(SettingsError, match=message):
        GatewaySettings.from_env(env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gateway_ids(port: int, tries: int) -> set[str]:
    """The gateway ids that answer /healthz on PORT, each try on a new connection."""
    import json
    seen = set()
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            seen.add(json.loads(conn.getresponse().read())["gateway"])
        except OSError:
            pass
        finally:
            conn.close()
    return seen


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_share_the_port_restart_and_stop_together(tmp_path, redis_url):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'runtime'}", "GANTRY_REDIS_URL": redis_url,
           "GANTRY_GATEWAY_PORT": str(port), "GANTRY_GATEWAY_ID": "wtest", "GANTRY_ADMIN_KEY_HASH": "0" * 64,
           "GANTRY_ASYNC_DISPATCH": "0"}
    log = open(tmp_path / "gateway.log", "wb")
    sup = subprocess.Popen([sys.executable, "-m", "gantry.gateway"], env={**env, "GANTRY_GATEWAY_WORKERS": "2"},
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        # the kernel spreads new connections over both: each answers with its own id
        assert _until("both workers to answer", lambda: _gateway_ids(port, 40) == {"wtest-w0", "wtest-w1"})
        first = _children(sup.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)                  # a worker dies: the supervisor starts another
        again = _until("a new worker", lambda: (c := _children(sup.pid)) and len(c) == 2 and first[0] not in c and c)
        assert first[1] in again
        assert _until("both answering again", lambda: _gateway_ids(port, 40) == {"wtest-w0", "wtest-w1"})
        sup.send_signal(signal.SIGTERM)                     # all stop with the supervisor
        assert sup.wait(30) == 0
        for pid in again:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        assert _gateway_ids(port, 3) == set()
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        log.close()
    text = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in text, text[-3000:]

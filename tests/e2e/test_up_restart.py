"""`gantry up` stopped with Ctrl-C and started again loses nothing: functions, versions,
scaling overrides and logs are still there, the admin key and the CLI config file still
work, and a function with min_instances 1 answers again within seconds (its containers
were removed on the stop, so the scheduler starts a new one).  `gantry up --reset` wipes it
all and makes a new key.  Real `gantry up` processes, each with its own state folder and
config home; the time until the function answers is printed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid

import pytest

from gantry.client import APIError, Client
from gantry.up import free_port

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(300)]

FAST = {"GANTRY_HEARTBEAT_INTERVAL": "0.3", "GANTRY_HEARTBEAT_TTL": "1.5", "GANTRY_HEALTH_INTERVAL": "0.2",
        "GANTRY_DRAIN_GRACE": "2", "GANTRY_NODE_CPU": "4", "GANTRY_NODE_MEMORY": "4Gi",
        "GANTRY_SCHEDULER_INTERVAL": "0.2", "GANTRY_SCHEDULER_LEASE_MS": "1500"}


class Up:
    """`gantry up` runs, one at a time, over one state folder and config home."""

    def __init__(self, tmp: str, node: str) -> None:
        self.tmp, self.node, self.port = tmp, node, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **FAST, "GANTRY_STATE_DIR": os.path.join(tmp, "state"),
                    "XDG_CONFIG_HOME": os.path.join(tmp, "config"), "GANTRY_NODE_ID": node,
                    "PYTHONUNBUFFERED": "1"}
        for name in ("GANTRY_API_KEY", "GANTRY_REDIS_URL", "GANTRY_URL"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self, *flags: str) -> float:
        """Start gantry up; the monotonic time it was started at, once /healthz answers."""
        self.runs += 1
        self.log = os.path.join(self.tmp, f"up-{self.runs}.log")
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gantry.cli", "up", "--port", str(self.port), *flags],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait("/healthz", self._healthy, timeout=120)
        return started

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Ctrl-C, as a user stops it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"gantry up did not stop on Ctrl-C\n{self.output()}")

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def client(self) -> Client:
        """A client as the CLI builds it: the URL and key from the config file."""
        with open(os.path.join(self.tmp, "config", "gantry", "config.toml"), "rb") as f:
            config = tomllib.load(f)
        assert config["url"] == self.url
        return Client(config["url"], config["api_key"], timeout=30)

    def wait(self, what: str, predicate, timeout: float = 60.0, every: float = 0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except APIError as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{self.output()}")


@pytest.fixture
def up(tmp_path, docker_client):
    u = Up(str(tmp_path), f"uprestart-{uuid.uuid4().hex[:6]}")
    try:
        yield u
    finally:
        if u.proc is not None and u.proc.poll() is None:
            u.proc.send_signal(signal.SIGINT)
            try:
                u.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(u.proc.pid, signal.SIGKILL)
        for container in docker_client.containers.list(all=True, filters={"label": f"gantry.node={u.node}"}):
            container.remove(force=True)


def _answers(client: Client, name: str) -> bool:
    return b"".join(client.invoke(name, b'{"x": 1}', "application/json")).startswith(b"{")


def test_a_restart_loses_nothing_and_reset_wipes_everything(up, kinds_build, docker_client):
    up.start()
    client = up.client()
    spec = {**kinds_build.spec.to_dict(), "name": "keep"}
    spec["scaling"] = {**spec["scaling"], "min_instances": 1}
    client.call("POST", "/v1/functions", {"spec": spec, "image": kinds_build.image})
    client.call("POST", "/v1/functions", {"spec": spec, "image": kinds_build.image})      # version 2
    client.call("POST", "/v1/functions/keep/scale", {"min_instances": 1})
    up.wait("keep v2 ready", lambda: client.call("GET", "/v1/functions/keep")["ready"] >= 1
            and client.call("GET", "/v1/functions/keep")["active"] == 2)
    assert _answers(client, "keep")
    logs = up.wait("logs shipped", lambda: client.call("GET", "/v1/functions/keep/logs")["entries"], timeout=30)
    up.stop()
    assert not docker_client.containers.list(all=True, filters={"label": f"gantry.node={up.node}"})

    started = up.start()
    healthy = time.monotonic() - started
    same = up.client()
    assert same.api_key == client.api_key                       # the config file still works, unchanged
    fn = client.call("GET", "/v1/functions/keep")               # the old key is accepted
    assert (fn["latest"], fn["active"], fn["min_override"]) == (2, 2, 1)
    assert "admin API key kept from the last start" in up.output()
    assert [f["name"] for f in same.call("GET", "/v1/functions")["functions"]] == ["keep"]
    assert same.call("GET", "/v1/functions/keep/logs")["entries"][:len(logs)] == logs
    up.wait("keep answering again", lambda: _answers(same, "keep"), timeout=60)
    answered = time.monotonic() - started
    print(f"\nGANTRY UP RESTART: /healthz after {healthy:.2f}s, the min_instances=1 function answered "
          f"{answered:.2f}s after the start ({answered - healthy:.2f}s after /healthz)")
    up.stop()

    up.start("--reset")
    out = up.output()
    assert "--reset: wiping" in out and "admin API key (new" in out
    fresh = up.client()
    assert fresh.api_key != client.api_key
    assert fresh.call("GET", "/v1/functions")["functions"] == []
    with pytest.raises(APIError) as refused:
        client.call("GET", "/v1/functions")
    assert refused.value.status == 401
    up.stop()

"""The platform end to end: scheduler, gateway and worker agents as separate processes (as
on a multi-node deployment; a second worker agent on the same engine stands in for a
second node), on the real Docker engine and a real Redis server."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from gantry import keys
from gantry.up import free_port
from gantry.build import build_function
from gantry.client import APIError, Client

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = os.path.join(HERE, "..", "containers", "functions", "kinds")
E2E_DB = os.environ.get("GANTRY_E2E_REDIS_DB", "11")
FAST_WORKER = {"GANTRY_HEARTBEAT_INTERVAL": "0.3", "GANTRY_HEARTBEAT_TTL": "1.5", "GANTRY_HEALTH_INTERVAL": "0.1",
               "GANTRY_DRAIN_GRACE": "5", "GANTRY_ORPHAN_INTERVAL": "1", "GANTRY_NODE_CPU": "8",
               "GANTRY_NODE_MEMORY": "8Gi"}
FAST_SCHEDULER = {"GANTRY_SCHEDULER_INTERVAL": "0.1", "GANTRY_SCHEDULER_LEASE_MS": "1500",
                  "GANTRY_SCHEDULER_LOAD_FRESH": "3", "GANTRY_SCHEDULER_NODE_DEAD_AFTER": "3"}




@dataclass
class Platform:
    redis_url: str
    run_id: str
    tmp: str
    client: Client = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, component: str, **env: str) -> subprocess.Popen:
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        full_env = {**os.environ, "GANTRY_REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1", **env}
        proc = subprocess.Popen([sys.executable, "-m", "gantry.daemons", component], env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def worker(self, node: str) -> subprocess.Popen:
        return self.start(node, "worker", GANTRY_NODE_ID=node, **FAST_WORKER)

    def restart_scheduler(self, **env: str) -> subprocess.Popen:
        """Kill the scheduler and start it again with ``env`` over the fast test settings."""
        self.kill("scheduler")
        return self.start("scheduler", "scheduler", **{**FAST_SCHEDULER, **env})

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def logs(self) -> str:
        out = []
        for name in sorted(os.listdir(self.tmp)):
            with open(os.path.join(self.tmp, name), errors="replace") as f:
                out.append(f"----- {name}\n{f.read()[-4000:]}")
        return "\n".join(out)

    def deploy(self, name: str, image: str, spec: dict) -> int:
        return self.client.call("POST", "/v1/functions", {"spec": {**spec, "name": name}, "image": image})["version"]

    def wait(self, what: str, predicate, timeout: float = 60.0, every: float = 0.1):
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
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{self.logs()}")

    def function(self, name: str) -> dict:
        return self.client.call("GET", f"/v1/functions/{name}")

    def invoke(self, name: str, payload: bytes = b"{}") -> tuple[int, bytes]:
        try:
            return 200, b"".join(self.client.invoke(name, payload, "application/json"))
        except APIError as exc:
            return exc.status, str(exc).encode()


@pytest.fixture(scope="session")
def kinds_build(docker_client):
    return build_function(docker_client, KINDS)


@contextmanager
def running_platform(redis_url, docker_client, tmp: str):
    """Scheduler, gateway and one worker on the e2e database, torn down (containers too) after."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{E2E_DB}"
    r = redis.Redis.from_url(url)
    r.flushdb()
    api_key = "gk_e2e_" + uuid.uuid4().hex
    r.set(keys.ADMIN_KEY_HASH, hashlib.sha256(api_key.encode()).hexdigest())
    port = free_port()
    p = Platform(url, uuid.uuid4().hex[:6], tmp)
    p.client = Client(f"http://127.0.0.1:{port}", api_key, timeout=60)
    p.start("scheduler", "scheduler", **FAST_SCHEDULER)
    p.start("gateway", "gateway", GANTRY_GATEWAY_PORT=str(port), GANTRY_COLD_START_TIMEOUT="45")
    p.worker(f"e2e-{p.run_id}-n1")
    p.wait("gateway and node", lambda: p.client.call("GET", "/v1/nodes")["nodes"], timeout=30)
    try:
        yield p
    finally:
        for name in list(p.procs):
            proc = p.procs.pop(name)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for container in docker_client.containers.list(all=True, filters={"label": "gantry.managed=1"}):
            if container.labels.get("gantry.node", "").startswith(f"e2e-{p.run_id}"):
                container.remove(force=True)
        r.flushdb()
        r.close()


@pytest.fixture
def platform(redis_url, docker_client, tmp_path):
    with running_platform(redis_url, docker_client, str(tmp_path)) as p:
        yield p


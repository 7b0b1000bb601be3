"""Every component rides out a Redis restart: Redis (append-only file, fsync every second)
is stopped for 10 s under a steady load and started again on the same port with its file.
The scheduler, the gateway and a worker agent run as separate processes against it, as on a
multi-node deployment.  No process may exit, no deployment may be lost, no request may
outlast its timeout, and a request that cannot be served while Redis is down is answered
503 ``unavailable`` at once.  The counts are printed (pytest -s shows them)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from gantry.settings import hash_key
from gantry.up import free_port

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(240)]

WORKER = {"GANTRY_HEARTBEAT_INTERVAL": "0.3", "GANTRY_HEARTBEAT_TTL": "1.5", "GANTRY_HEALTH_INTERVAL": "0.2",
          "GANTRY_DRAIN_GRACE": "2", "GANTRY_ORPHAN_INTERVAL": "1", "GANTRY_NODE_CPU": "4",
          "GANTRY_NODE_MEMORY": "4Gi"}
SCHEDULER = {"GANTRY_SCHEDULER_INTERVAL": "0.2", "GANTRY_SCHEDULER_LEASE_MS": "1500",
             "GANTRY_SCHEDULER_LOAD_FRESH": "3"}      # nodes: the default 60 s before one is dead
COLD_START_TIMEOUT = 10.0
FUNCTION_TIMEOUT = 2.0        # the kinds function's limits.timeout
MARGIN = 5.0                  # the gateway's upstream_timeout_margin
REQUEST_LIMIT = COLD_START_TIMEOUT + FUNCTION_TIMEOUT + MARGIN   # the longest any request may take
RATE, LOAD_SECONDS = 10, 30   # requests per second to the warm function, for this long
OUTAGE_AT, OUTAGE = 8.0, 10.0  # Redis stops this long after the load starts, for this long


@dataclass
class Stack:
    tmp: str
    redis_port: int
    node: str
    api_key: str = "gk_outage_" + uuid.uuid4().hex
    gateway_port: int = field(default_factory=free_port)
    redis: subprocess.Popen | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        """redis-server with its append-only file in tmp/redis, on the same port every time."""
        data = os.path.join(self.tmp, "redis")
        os.makedirs(data, exist_ok=True)
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", data,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--logfile", os.path.join(data, "redis.log")], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.redis_port, socket_connect_timeout=0.5) as r:
                    r.ping()
                return
            except redis.RedisError:      # not listening yet, or still loading its file
                time.sleep(0.05)
        raise AssertionError("redis-server did not come up")

    def stop_redis(self) -> None:
        self.redis.send_signal(signal.SIGTERM)
        self.redis.wait(20)

    def start(self, name: str, component: str, **env: str) -> None:
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        full = {**os.environ, "GANTRY_REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1", **env}
        full.pop("GANTRY_API_KEY", None)
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "gantry.daemons", component], env=full,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def logs(self) -> str:
        out = []
        for name in sorted(self.procs):
            with open(os.path.join(self.tmp, f"{name}.log"), errors="replace") as f:
                out.append(f"----- {name}\n{f.read()[-4000:]}")
        return "\n".join(out)

    def call(self, method: str, path: str, payload=None, timeout: float = 30.0) -> tuple[int, dict, float]:
        """(status, JSON body, seconds); a status of 0 when no HTTP answer came."""
        body = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.gateway_port}{path}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.api_key}",
                                              "Content-Type": "application/json"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError as exc:
            return 0, {"error": {"code": "no_answer", "message": repr(exc)}}, time.monotonic() - started
        elapsed = time.monotonic() - started
        try:
            return status, json.loads(raw or b"null"), elapsed
        except ValueError:
            return status, {"raw": raw[:200].decode(errors="replace")}, elapsed

    def invoke(self, name: str, timeout: float = REQUEST_LIMIT + 10) -> tuple[int, dict, float]:
        return self.call("POST", f"/v1/invoke/{name}", {"n": 1}, timeout)

    def wait(self, what: str, predicate, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{self.logs()}")

    def function(self, name: str) -> dict | None:
        status, body, _ = self.call("GET", f"/v1/functions/{name}")
        return body if status == 200 else None


@pytest.fixture
def stack(tmp_path, docker_client):
    import redis

    s = Stack(str(tmp_path), free_port(), f"outage-{uuid.uuid4().hex[:6]}")
    s.start_redis()
    try:
        with redis.Redis(port=s.redis_port) as r:
            from gantry import keys
            r.set(keys.ADMIN_KEY_HASH, hash_key(s.api_key))
        s.start("scheduler", "scheduler", **SCHEDULER)
        s.start("gateway", "gateway", GANTRY_GATEWAY_PORT=str(s.gateway_port),
                GANTRY_COLD_START_TIMEOUT=f"{COLD_START_TIMEOUT:g}")
        s.start("worker", "worker", GANTRY_NODE_ID=s.node, **WORKER)
        s.wait("the gateway and the node", lambda: s.call("GET", "/v1/nodes")[1].get("nodes"), timeout=30)
        yield s
    finally:
        for proc in s.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in s.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for container in docker_client.containers.list(all=True, filters={"label": f"gantry.node={s.node}"}):
            container.remove(force=True)
        if s.redis is not None and s.redis.poll() is None:
            s.redis.kill()
            s.redis.wait(10)


def _spec(build, **scaling) -> dict:
    spec = build.spec.to_dict()
    spec["scaling"].update(scaling)
    return spec


@dataclass
class Result:
    name: str
    started: float        # seconds since the load began
    status: int
    code: str
    seconds: float


def test_every_component_rides_out_a_redis_restart(stack, kinds_build):
    s = stack
    for name, scaling in (("warm", {"min_instances": 1}),
                          ("zero", {"min_instances": 0, "idle_timeout": "1s", "keep_paused": "0s"})):
        status, body, _ = s.call("POST", "/v1/functions", {"spec": {**_spec(kinds_build, **scaling), "name": name},
                                                            "image": kinds_build.image})
        assert status == 201, body
    assert s.call("POST", "/v1/functions/warm/scale", {"min_instances": 1})[0] == 200
    s.wait("warm ready", lambda: (s.function("warm") or {}).get("ready") == 1)
    assert s.invoke("zero")[0] == 200                    # the gateway has seen it; then it scales to zero
    s.wait("zero back at zero", lambda: (s.function("zero") or {}).get("total") == 0, timeout=60)
    s.wait("logs shipped", lambda: s.call("GET", "/v1/functions/warm/logs")[1].get("entries"), timeout=30)
    logs_before = s.call("GET", "/v1/functions/warm/logs?limit=1000")[1]["entries"]

    results: list[Result] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def send(name: str) -> None:
        started = time.monotonic() - t0
        status, body, seconds = s.invoke(name)
        code = (body.get("error") or {}).get("code", "") if isinstance(body, dict) else ""
        with lock:
            results.append(Result(name, started, status, code, seconds))

    outage: dict[str, float] = {}

    def redis_restart() -> None:
        time.sleep(OUTAGE_AT)
        outage["down"] = time.monotonic() - t0
        s.stop_redis()
        time.sleep(OUTAGE)
        s.start_redis()
        outage["up"] = time.monotonic() - t0

    restarter = threading.Thread(target=redis_restart)
    restarter.start()
    with ThreadPoolExecutor(32) as pool:
        for i in range(RATE * LOAD_SECONDS):
            time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
            pool.submit(send, "warm")
            if i % (RATE // 2) == 0:                       # twice a second: what cannot be served
                pool.submit(send, "zero")                  # known, no ready instance
                pool.submit(send, f"never-{i}")            # never seen by this gateway
    restarter.join()

    after_up = time.monotonic()
    first = s.wait("warm answering after the restart", lambda: s.invoke("warm", timeout=10)[0] == 200, timeout=30)
    answered_in = time.monotonic() - after_up
    dead = {name: proc.returncode for name, proc in s.procs.items() if proc.poll() is not None}

    def summary(name_prefix: str, during: bool | None = None) -> dict:
        picked = [r for r in results if r.name.startswith(name_prefix) and
                  (during is None or (outage["down"] <= r.started < outage["up"]) == during)]
        statuses: dict[str, int] = {}
        for r in picked:
            key = f"{r.status} {r.code}".strip()
            statuses[key] = statuses.get(key, 0) + 1
        return {"sent": len(picked), "failed": sum(r.status != 200 for r in picked), "statuses": statuses,
                "max_seconds": round(max((r.seconds for r in picked), default=0.0), 3)}

    report = {"redis_down_at": round(outage["down"], 2), "redis_up_at": round(outage["up"], 2),
              "warm (min_instances 1)": summary("warm"),
              "warm during the outage": summary("warm", True),
              "zero during the outage": summary("zero", True),
              "unknown during the outage": summary("never-", True),
              "zero, unknown outside it": [summary("zero", False), summary("never-", False)],
              "slowest": [(r.name, round(r.started, 2), r.status, r.code, round(r.seconds, 3))
                          for r in sorted(results, key=lambda r: -r.seconds)[:5]],
              "warm answering again after Redis was back (s)": round(answered_in, 2),
              "processes exited": dead}
    print("\nREDIS OUTAGE " + json.dumps(report, indent=1))

    assert first and not dead, s.logs()
    assert max(r.seconds for r in results) < REQUEST_LIMIT, report
    assert all(r.status in (200, 503) for r in results if not r.name.startswith("never-")), report
    assert all(r.status in (404, 503) for r in results if r.name.startswith("never-")), report
    # what cannot be served while Redis is down fails fast; the first second may still wait
    # ("zero" is served from the gateway's cached view when it still had a ready instance)
    settled = [r for r in results if r.name != "warm" and outage["down"] + 2 <= r.started < outage["up"] - 1]
    assert settled and all((r.status == 503 and r.code == "unavailable" and r.seconds < 1.5)
                           or (r.name == "zero" and r.status == 200) for r in settled), report
    assert all(r.status == 503 for r in settled if r.name.startswith("never-")), report
    # nothing was lost: both functions with their version and override, the logs, and the key
    listed = {f["name"]: f for f in s.call("GET", "/v1/functions")[1]["functions"]}
    assert set(listed) >= {"warm", "zero"} and listed["warm"]["latest"] == 1 and listed["zero"]["latest"] == 1
    assert listed["warm"]["min_override"] == 1
    logs_after = s.call("GET", "/v1/functions/warm/logs?limit=1000")[1]["entries"]
    assert [e["id"] for e in logs_before] == [e["id"] for e in logs_after[:len(logs_before)]]
    assert s.invoke("zero")[0] == 200                    # scheduling works again: a cold start

"""Helpers of the gateway tests: the app on aiohttp's test server (loopback) against the real Redis; the
instances are real runtime processes (``python -m gantry_runtime``) registered in Redis as
the scheduler and worker would, or small in-process fake upstreams.  Every wait is bounded."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from gantry import keys, state
from gantry.up import free_port
from gantry.gateway import GatewaySettings, create_app, make_runner
from gantry.manifest import FunctionSpec

ROOT = Path(__file__).resolve().parents[2]
KINDS = ROOT / "tests" / "containers" / "functions" / "kinds"
ADMIN_KEY = "gk_test_" + "5" * 32
ADMIN_HASH = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
INSTANCE_KEY = "test-instance-key"   # every runtime here is started with it; every record carries it


class Runtime:
    def __init__(self, tmp: Path, handler: str, **env: str) -> None:
        self.port = free_port()
        self.handler = handler
        self.log_path = tmp / f"runtime-{self.port}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime"), "PYTHONUNBUFFERED": "1",
                    "GANTRY_CODE_DIR": str(KINDS), "GANTRY_HANDLER": handler, "GANTRY_FUNCTION": "kinds",
                    "GANTRY_HOST": "127.0.0.1", "GANTRY_PORT": str(self.port),
                    "GANTRY_INSTANCE_KEY": INSTANCE_KEY, **env}
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gantry_runtime"], env=full_env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp))

    def wait_ready(self, timeout: float = 20) -> "Runtime":
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as resp:
                    if json.loads(resp.read())["status"] == "ready":
                        return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime {self.handler} not ready: {self.log_path.read_text()}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Runtimes:
    """Shared runtimes (one per handler, started on first use) and private ones."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.shared: dict[str, Runtime] = {}
        self.private: list[Runtime] = []

    def get(self, handler: str) -> Runtime:
        if handler not in self.shared:
            self.shared[handler] = Runtime(self.tmp, handler).wait_ready()
        return self.shared[handler]

    def start(self, handler: str, **env: str) -> Runtime:
        rt = Runtime(self.tmp, handler, **env)
        self.private.append(rt)
        return rt

    def stop_all(self) -> None:
        for rt in [*self.shared.values(), *self.private]:
            rt.terminate()
        for rt in [*self.shared.values(), *self.private]:
            rt.stop()


def spec_dict(name: str, **sections) -> dict:
    data = {"name": name, "handler": "main:echo", "resources": {"cpu": 0.1, "memory": "64Mi"},
            "scaling": {"concurrency": 4, "max_instances": 5}, "limits": {"timeout": "10s"}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def register_function(r, name: str, version: int = 1, active: int | None = None, image: str = "img:1",
                      **sections) -> FunctionSpec:
    """Write a function and its version as the admin API would (sync client)."""
    spec = FunctionSpec.from_dict(spec_dict(name, **sections))
    r.hset(keys.function_version(name, version),
           mapping={"image": image, "spec": state.pack(spec.to_dict()), "created": str(time.time())})
    r.hset(keys.function(name), mapping={"name": name, "latest": version,
                                         "active": version if active is None else active})
    r.sadd(keys.FUNCTIONS, name)
    r.set(keys.function_seq(name), version)
    return spec


def instance_record(name: str, port: int, version: int = 1, st: str = state.READY,
                    inst_id: str | None = None) -> state.Instance:
    return state.Instance(id=inst_id or f"{name}-{uuid.uuid4().hex[:8]}", function=name, version=version,
                          node="n1", state=st, host="127.0.0.1", port=port, created=time.time(),
                          key=INSTANCE_KEY)


def add_instance(r, name: str, port: int, version: int = 1, st: str = state.READY,
                 inst_id: str | None = None) -> str:
    """Write an instance as the scheduler and worker would (sync client)."""
    inst = instance_record(name, port, version, st, inst_id)
    r.hset(keys.instance(inst.id), mapping=inst.to_hash())
    r.sadd(keys.function_instances(name), inst.id)
    return inst.id


class GatewayTestServer(TestServer):
    """aiohttp's test server on the gateway's own runner (gateway.front), as ``serve`` runs it."""

    async def _make_runner(self, **kwargs):
        return make_runner(self.app, **kwargs)


@asynccontextmanager
async def gateway(redis_url: str, app_hook=None, **overrides):
    """A gateway on a loopback test server; yields the test client."""
    values = dict(redis_url=redis_url, admin_key_hash=ADMIN_HASH, load_report_interval=0.2,
                  cache_refresh_interval=0.5, cold_start_timeout=5.0,
                  metrics_public=True)   # tests read counters; test_hardening checks the key
    values.update(overrides)
    app = create_app(GatewaySettings(**values))
    if app_hook is not None:
        app_hook(app)
    client = TestClient(GatewayTestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()

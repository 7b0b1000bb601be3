"""`gantry up`: the whole platform for one machine, in the foreground.

Redis (our own redis-server on a loopback port unless GANTRY_REDIS_URL names one), then a
worker agent for this node, a scheduler, and the gateway, all in one uvloop event loop.
Ctrl-C (or SIGTERM) stops the gateway, the scheduler and the worker, removes every
function container of this node, and stops the Redis server it started.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace

from . import keys

STATE_DIR = os.environ.get("GANTRY_STATE_DIR", os.path.expanduser("~/.local/state/gantry"))


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def new_api_key() -> str:
    """192 random bits behind a readable prefix."""
    return "gk_" + secrets.token_urlsafe(24)


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OwnRedis:
    """A redis-server this process started; stopped with it."""
    process: subprocess.Popen
    url: str
    workdir: str

    @classmethod
    def start(cls) -> "OwnRedis":
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it) "
                               "and GANTRY_REDIS_URL names no server")
        os.makedirs(STATE_DIR, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix="redis-", dir=STATE_DIR)
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        own = cls(proc, f"redis://127.0.0.1:{port}/0", workdir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return own
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        own.stop()
        raise RuntimeError(f"redis-server did not start on port {port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def run_platform(host: str, port: int, redis_url: str, api_key: str, node_id: str, ready: asyncio.Event | None = None,
                       stop: asyncio.Event | None = None) -> None:
    import docker
    import redis.asyncio as aioredis

    from .build.images import ensure_runtime_image
    from .gateway.app import serve
    from .gateway.settings import GatewaySettings
    from .scheduler.scheduler import Scheduler
    from .scheduler.settings import SchedulerSettings
    from .worker.agent import WorkerAgent
    from .worker.settings import WorkerSettings

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    docker_client = docker.from_env(timeout=300)
    await asyncio.to_thread(docker_client.ping)
    runtime = await asyncio.to_thread(ensure_runtime_image, docker_client, say)
    say(f"runtime image {runtime}")

    r = aioredis.from_url(redis_url)
    await r.set(keys.ADMIN_KEY_HASH, key_hash(api_key))
    worker = WorkerAgent(replace(WorkerSettings.from_env(), node_id=node_id), r, docker_client)
    scheduler = Scheduler(replace(SchedulerSettings.from_env(), holder_id=f"{node_id}-{os.getpid()}"), r)
    gateway_settings = replace(GatewaySettings.from_env(), redis_url=redis_url, host=host, port=port)
    await worker.register()
    tasks = [
        asyncio.create_task(worker.run(stop), name="worker"),
        asyncio.create_task(scheduler.run(stop), name="scheduler"),
        asyncio.create_task(serve(gateway_settings, stop), name="gateway"),
    ]
    say(f"Gantry is up: gateway http://{host}:{port}, node {node_id}, Redis {redis_url}")
    if ready:
        ready.set()
    try:
        done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *tasks],
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception():
                say(f"gantry up: {task.get_name()} failed: {task.exception()!r}")
    finally:
        stop.set()
        say("stopping: gateway, scheduler, worker; removing this node's containers")
        await asyncio.gather(*tasks, return_exceptions=True)
        await scheduler.close()
        await worker.shutdown(remove_containers=True)
        await r.aclose()
        docker_client.close()
        say("stopped")


def main(host: str, port: int) -> int:
    from .client import write_config

    api_key = os.environ.get("GANTRY_API_KEY") or new_api_key()
    generated = "GANTRY_API_KEY" not in os.environ
    own = None
    redis_url = os.environ.get("GANTRY_REDIS_URL")
    if not redis_url:
        own = OwnRedis.start()
        redis_url = own.url
    url = f"http://{host}:{port}"
    path = write_config(url, api_key)
    if generated:
        say(f"admin API key (shown once; also saved to {path}): {api_key}")
    else:
        say(f"admin API key from GANTRY_API_KEY; client settings saved to {path}")
    try:
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is a dependency
            runner = asyncio.run
        runner(run_platform(host, port, redis_url, api_key, os.environ.get("GANTRY_NODE_ID", socket.gethostname())))
    finally:
        if own:
            own.stop()
    return 0

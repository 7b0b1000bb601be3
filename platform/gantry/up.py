"""`gantry up`: the whole platform for one machine, in the foreground.

Redis (our own redis-server on a loopback port, with a password kept in the state folder,
unless GANTRY_REDIS_URL names one), then a
worker agent for this node, a scheduler, and the gateway, all in one uvloop event loop.
Ctrl-C (or SIGTERM) stops the gateway, the scheduler and the worker, removes every
function container of this node, and stops the Redis server it started.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace

from gantry_runtime.config import Env
from gantry_runtime.loop import run_until_signal

from .store import Store
from .settings import hash_key

STATE_DIR = os.environ.get("GANTRY_STATE_DIR", os.path.expanduser("~/.local/state/gantry"))


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def new_api_key() -> str:
    """192 random bits behind a readable prefix."""
    return "gk_" + secrets.token_urlsafe(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REDIS_PASSWORD_FILE = "redis.password"


def redis_password(state_dir: str) -> str:
    """The password of ``gantry up``'s own Redis: read from STATE_DIR/redis.password, else
    generated (256 random bits, URL-safe) and written there with mode 0600.  Other local
    users must not reach Redis: whoever can write to it can deploy any image."""
    path = os.path.join(state_dir, REDIS_PASSWORD_FILE)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        with open(path) as f:
            password = f.read().strip()
        if not password:
            raise RuntimeError(f"{path} is empty; remove it and a new password is made")
        return password
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for printing."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"


@dataclass
class OwnRedis:
    """A redis-server this process started, with a password (``redis_password``); stopped
    with it."""
    process: subprocess.Popen
    url: str                  # carries the password: print ``redacted(url)``
    workdir: str

    def __repr__(self) -> str:
        return f"OwnRedis(url={redacted(self.url)!r}, workdir={self.workdir!r})"

    @classmethod
    def start(cls, state_dir: str | None = None) -> "OwnRedis":
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it) "
                               "and GANTRY_REDIS_URL names no server")
        state_dir = state_dir or STATE_DIR
        password = redis_password(state_dir)
        workdir = tempfile.mkdtemp(prefix="redis-", dir=state_dir)
        port = free_port()
        # the password goes in on stdin ("-": read config from stdin), never on the command
        # line, where every local user could read it (ps)
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log"), "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        with proc.stdin:
            proc.stdin.write(f"requirepass {password}\n".encode())
        own = cls(proc, f"redis://:{password}@127.0.0.1:{port}/0", workdir)
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


def read_settings(host: str, port: int, node_id: str):
    """The three components' settings, from the environment and these flags (the gateway's
    Redis URL is filled in once Redis is known)."""
    from .gateway.settings import GatewaySettings
    from .scheduler.settings import SchedulerSettings
    from .worker.settings import WorkerSettings

    return (WorkerSettings.from_env(node_id=node_id),
            SchedulerSettings.from_env(holder_id=f"{node_id}-{os.getpid()}"),
            GatewaySettings.from_env(host=host, port=port))


async def run_platform(settings, redis_url: str, api_key: str, stop: asyncio.Event,
                       ready: asyncio.Event | None = None) -> None:
    """Run the worker, scheduler and gateway (``settings`` from read_settings) until ``stop``."""
    import docker
    import redis.asyncio as aioredis

    from .build.images import ensure_runtime_image
    from .gateway.app import serve
    from .scheduler.scheduler import Scheduler
    from .worker.agent import WorkerAgent

    worker_settings, scheduler_settings, gateway_settings = settings
    gateway_settings = replace(gateway_settings, redis_url=redis_url)
    host, port, node_id = gateway_settings.host, gateway_settings.port, worker_settings.node_id
    docker_client = docker.from_env(timeout=300)
    await asyncio.to_thread(docker_client.ping)
    runtime = await asyncio.to_thread(ensure_runtime_image, docker_client, say)
    say(f"runtime image {runtime}")

    r = aioredis.from_url(redis_url)
    await Store(r).set_admin_key_hash(hash_key(api_key))
    worker = WorkerAgent(worker_settings, r, docker_client)
    scheduler = Scheduler(scheduler_settings, r)
    await worker.register()
    tasks = [
        asyncio.create_task(worker.run(stop), name="worker"),
        asyncio.create_task(scheduler.run(stop), name="scheduler"),
        asyncio.create_task(serve(gateway_settings, stop), name="gateway"),
    ]
    say(f"Gantry is up: gateway http://{host}:{port}, node {node_id}, Redis {redacted(redis_url)}")
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
    from .daemons import configure

    env = Env()
    settings = configure(lambda: read_settings(host, port, env.text("GANTRY_NODE_ID") or socket.gethostname()))
    api_key = os.environ.get("GANTRY_API_KEY") or new_api_key()
    generated = "GANTRY_API_KEY" not in os.environ
    own = None
    redis_url = env.text("GANTRY_REDIS_URL")   # none: our own server, never the shared default
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
        run_until_signal(lambda stop: run_platform(settings, redis_url, api_key, stop))
    finally:
        if own:
            own.stop()
    return 0

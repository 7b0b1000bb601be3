"""`gantry up`: the whole platform for one machine, in the foreground.

Redis (our own redis-server on a loopback port, with a password and its data kept in the
state folder, unless GANTRY_REDIS_URL names one), then a worker agent for this node, a
scheduler, and the gateway, all in one uvloop event loop.  Ctrl-C (or SIGTERM) stops the
gateway, the scheduler and the worker, removes every function container of this node, and
stops the Redis server it started.

What was deployed survives a stop: the Redis server writes an append-only file under
STATE_DIR/redis (fsync every second) and the next start reads it back, with the admin key's
hash among it, so the same key keeps working.  ``gantry up --reset`` wipes that folder.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace

from gantry_runtime.config import Env
from gantry_runtime.loop import run_until_signal

from .store import Store
from .settings import hash_key, redis_client



def state_dir() -> str:
    """GANTRY_STATE_DIR, else ~/.local/state/gantry: the Redis password and data of gantry up."""
    return Env().text("GANTRY_STATE_DIR") or os.path.expanduser("~/.local/state/gantry")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def new_api_key() -> str:
    """192 random bits behind a readable prefix."""
    return "gk_" + secrets.token_urlsafe(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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


REDIS_DIR = "redis"            # under the state folder: the append-only files, the port, the log
AOF_DIR = "appendonlydir"      # redis-server's own name for its append-only files (Redis 7)
_PORT_FILE, _PID_FILE, _LOCK_FILE = "port", "redis.pid", "lock"


def _term_with_parent() -> None:
    """In redis-server's child before exec: SIGTERM when gantry up dies, even by SIGKILL, so
    the server flushes its append-only file and no second writer of it is ever left over."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _stop_leftover(pid_path: str) -> None:
    """Stop a redis-server an earlier gantry up of this state folder left running (its pid
    file names a live redis-server): two servers must never write one append-only file."""
    pid = _read_int(pid_path)
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if not f.read().startswith(b"redis-server"):
                return
        say(f"stopping a redis-server left over from an earlier gantry up (pid {pid})")
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)


def wipe_redis_data(state: str) -> str:
    """Remove STATE/redis: every function, version, scaling override, log and the admin key's
    hash of gantry up's own Redis (the password file stays).  The path removed."""
    path = os.path.join(state, REDIS_DIR)
    shutil.rmtree(path, ignore_errors=True)
    return path


@dataclass
class OwnRedis:
    """A redis-server this process started, with a password (``redis_password``); stopped
    with it.  ``durable``: its data lives in STATE/redis (append-only file, fsync every
    second) and is read back by the next start; otherwise in a temporary folder removed on
    stop (``gantry bench``)."""
    process: subprocess.Popen
    url: str                  # carries the password: print ``redacted(url)``
    workdir: str
    durable: bool = False
    _lock: int | None = field(default=None, repr=False)   # fd holding STATE/redis/lock

    def __repr__(self) -> str:
        return f"OwnRedis(url={redacted(self.url)!r}, workdir={self.workdir!r}, durable={self.durable})"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    @classmethod
    def start(cls, state: str | None = None, durable: bool = False, reset: bool = False) -> "OwnRedis":
        """Start the server.  ``durable``: on STATE/redis, on the port it had last time if that
        is free (else a new one: the data is in the files, not the port); ``reset`` wipes
        STATE/redis first.  Only one gantry up may use a state folder at a time."""
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it) "
                               "and GANTRY_REDIS_URL names no server")
        state = state or state_dir()
        password = redis_password(state)
        lock = None
        if durable:
            lock = _lock_state(state)
            if reset:
                wipe_redis_data(state)
            workdir = os.path.join(state, REDIS_DIR)
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            _stop_leftover(os.path.join(workdir, _PID_FILE))
            last = _read_int(os.path.join(workdir, _PORT_FILE))
            port = last if last and port_free(last) else free_port()
            with open(os.path.join(workdir, _PORT_FILE), "w") as f:
                f.write(f"{port}\n")
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--appenddirname", AOF_DIR,
                           "--save", "", "--pidfile", os.path.join(workdir, _PID_FILE)]
        else:
            workdir = tempfile.mkdtemp(prefix="redis-", dir=state)
            port = free_port()
            persistence = ["--save", "", "--appendonly", "no"]
        # the password goes in on stdin ("-": read config from stdin), never on the command
        # line, where every local user could read it (ps)
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), *persistence,
             "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log"), "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_term_with_parent if durable else None)
        with proc.stdin:
            proc.stdin.write(f"requirepass {password}\n".encode())
        own = cls(proc, f"redis://:{password}@127.0.0.1:{port}/0", workdir, durable, lock)
        if own._wait_loaded(password, 60 if durable else 10):
            return own
        own.stop()
        raise RuntimeError(f"redis-server did not start on port {port} (see {workdir}/redis.log)")

    def _wait_loaded(self, password: str, timeout: float) -> bool:
        """Until the server answers PING (a server still reading its append-only file
        answers -LOADING); False if it exited or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                    answer = b""
                    while answer.count(b"\r\n") < 2:
                        chunk = s.recv(200)
                        if not chunk:
                            break
                        answer += chunk
                    if answer.endswith(b"+PONG\r\n"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()     # with an append-only file: fsync, then exit
            try:
                self.process.wait(30 if self.durable else 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.durable:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _lock_state(state: str) -> int:
    """An exclusive lock on STATE/lock for as long as this process runs (the kernel drops it
    if the process dies), so two gantry ups never share one Redis data folder."""
    os.makedirs(state, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another gantry up is using {state}; stop it first "
                           "(or give this one its own GANTRY_STATE_DIR)") from None
    return fd


def read_settings(host: str, port: int, node_id: str):
    """The three components' settings, from the environment and these flags (the gateway's
    Redis URL is filled in once Redis is known)."""
    from .gateway.settings import GatewaySettings
    from .scheduler.settings import SchedulerSettings
    from .worker.settings import WorkerSettings

    # One machine is the whole platform: its GPUs do not keep CPU functions off it, unless
    # GANTRY_GPU_NODE_CPU_WORK=0 says so (docs/gpus.md)
    cpu_work = None if Env().text("GANTRY_GPU_NODE_CPU_WORK") is not None else True
    return (WorkerSettings.from_env(node_id=node_id, gpu_node_cpu_work=cpu_work),
            SchedulerSettings.from_env(holder_id=f"{node_id}-{os.getpid()}"),
            GatewaySettings.from_env(host=host, port=port, workers=1))   # one gateway: in this process


@dataclass(frozen=True)
class AdminKey:
    """The admin API key gantry up runs with, and how it came to be."""
    key: str | None      # None: kept from an earlier start, but this process does not know it
    how: str             # "given" (GANTRY_API_KEY), "new", "kept"


async def settle_admin_key(store: Store, given: str | None, known: str | None) -> AdminKey:
    """The admin key: ``given`` (GANTRY_API_KEY) always sets it; otherwise the one whose hash
    Redis keeps from an earlier start (``known``, the config file's key, if it matches), and
    a new one only when Redis has none (a first start, or after --reset)."""
    if given:
        await store.set_admin_key_hash(hash_key(given))
        return AdminKey(given, "given")
    candidate = new_api_key()
    if await store.claim_admin_key_hash(hash_key(candidate)):
        return AdminKey(candidate, "new")
    stored = await store.admin_key_hash()
    return AdminKey(known if known and stored == hash_key(known) else None, "kept")


async def _settle_admin_key(redis_url: str, given: str | None, known: str | None) -> AdminKey:

    r = redis_client(redis_url)
    try:
        return await settle_admin_key(Store(r), given, known)
    finally:
        await r.aclose()


async def run_platform(settings, redis_url: str, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run the worker, scheduler and gateway (``settings`` from read_settings) until ``stop``."""
    import docker

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

    r = redis_client(redis_url)
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


def main(host: str, port: int, reset: bool = False) -> int:
    from .client import Client, write_config
    from .daemons import configure, with_secrets_key
    from .tenants import secretbox

    env = Env()
    if not env.text(secretbox.KEY_ENV) and not env.text(secretbox.KEY_FILE_ENV):
        # the secrets master key: made once, 0600, beside the Redis password (never in Redis)
        os.environ[secretbox.KEY_FILE_ENV] = secretbox.ensure_key_file(state_dir())
    settings = configure(with_secrets_key(
        lambda: read_settings(host, port, env.text("GANTRY_NODE_ID") or socket.gethostname())))
    given = env.text("GANTRY_API_KEY")
    own = None
    redis_url = env.text("GANTRY_REDIS_URL")   # none: our own server, never the shared default
    try:
        if redis_url and reset:
            raise RuntimeError("--reset wipes the data of gantry up's own Redis; GANTRY_REDIS_URL names "
                               "another server, which it leaves alone")
        if not redis_url:
            state = state_dir()
            if reset:
                say(f"--reset: wiping {os.path.join(state, REDIS_DIR)}: every function, version, scaling "
                    "override and log, and the admin key (a new one is made)")
            own = OwnRedis.start(state, durable=True, reset=reset)
            redis_url = own.url
            say(f"Redis data in {own.workdir} (append-only, kept across restarts; gantry up --reset wipes it)")
        url = f"http://{host}:{port}"
        known = None if given else Client.resolve(url).api_key   # the config file's key, if any
        admin = asyncio.run(_settle_admin_key(redis_url, given, known))
        if admin.key is not None:
            path = write_config(url, admin.key)
            if admin.how == "new":
                say(f"admin API key (new; shown once, also saved to {path}): {admin.key}")
            elif admin.how == "given":
                say(f"admin API key from GANTRY_API_KEY; client settings saved to {path}")
            else:
                say(f"admin API key kept from the last start (in {path})")
        else:
            say("admin API key kept from the last start, but the CLI config file does not hold it: use the key "
                "printed then, set GANTRY_API_KEY to choose a new one, or gantry up --reset to wipe everything")
        run_until_signal(lambda stop: run_platform(settings, redis_url, stop))
    finally:
        if own:
            own.stop()
    return 0

"""The platform a fault scenario runs on: ``bench.stack.Stack`` (scheduler, gateway and worker
agent each in its own process, a node id unique to the run) with what the faults need on top:
its own redis-server that can be killed and started again on the same port, with or without
an append-only file; a standby scheduler; processes killed (SIGKILL), frozen (SIGSTOP),
thawed and started again with the same settings; logs appended across restarts; and an
admin client on a second loopback address."""
from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from ... import keys
from ...sdk import Client
from ...settings import hash_key
from ...up import free_port
from ..stack import Stack, _term_with_parent

# The operator's address: the gateway limits wrong keys per client address, so the load's own
# 401s (after Redis lost the key) must not hold back the calls that repair the platform.
ADMIN_SOURCE = "127.0.0.2"


class FaultRedis:
    """A password-protected redis-server on a fixed loopback port.  ``aof``: an append-only file
    fsynced every second (what ``gantry up`` runs), read back by the next start; otherwise no
    persistence at all, so a restart comes back empty."""

    def __init__(self, tmp: str, aof: bool) -> None:
        self.aof = aof
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.dir = os.path.join(tmp, "redis")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", *persistence,
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"), "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_term_with_parent)
        with self.process.stdin:
            self.process.stdin.write(f"requirepass {self.password}\n".encode())
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self._pong():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} (see {self.dir}/redis.log)")

    def _pong(self) -> bool:
        """PING answers PONG (a server still reading its file answers -LOADING)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while answer.count(b"\r\n") < 2:
                    chunk = s.recv(200)
                    if not chunk:
                        return False
                    answer += chunk
                return answer.endswith(b"+PONG\r\n")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (with the file, at most the last second is lost)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class FaultStack(Stack):
    """Processes by name: ``scheduler`` (started first, so it leads), ``standby`` (a second
    scheduler, when asked for), ``gateway``, ``worker``.  Every setting is the platform's
    default; the environment given here names only ids and ports."""
    aof: bool = True
    standby: bool = False
    launched: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)      # names now frozen with SIGSTOP

    @classmethod
    def create(cls, docker_client, *, aof: bool = True, standby: bool = False) -> "FaultStack":
        run_id = uuid.uuid4().hex[:8]
        return cls(run_id=run_id, tmp=tempfile.mkdtemp(prefix=f"gantry-faults-{run_id}-"), docker=docker_client,
                   node_id=f"faults-{run_id}", aof=aof, standby=standby)

    @property
    def settings(self) -> dict:
        return {"processes": "scheduler" + (", standby scheduler" if self.standby else "") +
                             ", gateway, worker: one process each (python -m gantry.daemons), platform defaults",
                "redis": "own redis-server, " + ("append-only file, fsync every second" if self.aof
                                                 else "no persistence (no append-only file, no snapshots)")}

    def start(self) -> None:
        self.redis = FaultRedis(self.tmp, self.aof)
        self.redis.start()
        self.api_key = "gk_faults_" + uuid.uuid4().hex
        self.seed_admin_key()
        self.port = free_port()
        self.client = Client(self.url, self.api_key, timeout=60)
        self.launch("scheduler", "scheduler", {"GANTRY_SCHEDULER_ID": f"{self.node_id}-scheduler"})
        self.wait("the first scheduler to lead", lambda: self.leader() == "scheduler", 60, every=0.05)
        if self.standby:
            self.launch("standby", "scheduler", {"GANTRY_SCHEDULER_ID": f"{self.node_id}-standby"})
        self.launch("gateway", "gateway", {"GANTRY_GATEWAY_PORT": str(self.port)})
        self.launch("worker", "worker", {"GANTRY_NODE_ID": self.node_id})
        self.wait("the gateway and the worker node", self.client.nodes, 60)

    def seed_admin_key(self, only_if_absent: bool = False) -> bool:
        """The admin key's hash in Redis (what ``gantry up`` does, SET NX on its start)."""
        r = self.redis_client()
        try:
            return bool(r.set(keys.ADMIN_KEY_HASH, hash_key(self.api_key), nx=only_if_absent))
        finally:
            r.close()

    def redis_client(self):
        import redis

        return redis.Redis.from_url(self.redis.url, socket_timeout=2, socket_connect_timeout=1)

    # -- processes ---------------------------------------------------------------------------
    def launch(self, name: str, component: str, env: dict[str, str]) -> None:
        self.launched[name] = (component, env)
        self._spawn(name, component, env)

    def kill(self, name: str) -> None:
        """SIGKILL: no deregistration, no clean-up."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def restart(self, name: str) -> None:
        component, env = self.launched[name]
        self._spawn(name, component, env)

    def freeze(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)
        self.stopped.add(name)

    def thaw(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)
        self.stopped.discard(name)

    def leader(self) -> str | None:
        """Which of our scheduler processes holds the lease (None: nobody, or Redis is down)."""
        r = self.redis_client()
        try:
            holder = r.get(keys.LEADER)
        except Exception:  # noqa: BLE001 - Redis down: nobody known
            return None
        finally:
            r.close()
        if holder is None:
            return None
        holder = holder.decode()
        return next((n for n, (_, env) in self.launched.items() if env.get("GANTRY_SCHEDULER_ID") == holder), holder)

    def log_text(self, name: str) -> str:
        try:
            with open(os.path.join(self.tmp, f"{name}.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def exited(self) -> dict[str, int]:
        """Processes that exited on their own (a killed one was removed from ``procs``)."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    # -- the operator's admin calls ----------------------------------------------------------
    def admin(self, method: str, path: str, payload=None, timeout: float = 10.0) -> tuple[int, dict]:
        """One admin API call from ADMIN_SOURCE: (status, JSON body); status 0 when no answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(ADMIN_SOURCE, 0))
        body = None if payload is None else json.dumps(payload).encode()
        try:
            conn.request(method, path, body, {"Authorization": f"Bearer {self.api_key}",
                                              "Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw or b"null")
            except ValueError:
                return resp.status, {}
        except OSError as exc:
            return 0, {"error": {"code": "no_answer", "message": repr(exc)}}
        finally:
            conn.close()

    # -- teardown ----------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Thaw what is frozen, then SIGTERM every process (the worker removes its containers),
        force-remove what is left, stop Redis.  Returns what had to be forced."""
        for name in list(self.stopped):
            self.thaw(name)
        forced = []
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                forced.append(f"process {name} killed")
        self.procs.clear()
        forced += super().stop()       # nothing left to stop but containers and Redis
        return forced

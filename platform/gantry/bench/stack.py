"""The platform under test: its own redis-server, and the scheduler, gateway and worker agent
each in its own process (as `python -m gantry.daemons`, the multi-process shape of a
deployment), with a node id unique to the run so that every container it starts carries
the label ``gantry.node=<node id>`` and can be found and removed afterwards."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from .. import keys, state
from ..sdk import Client, GantryError, NotFound
from ..settings import hash_key
from ..up import OwnRedis, free_port

LABEL_NODE = "gantry.node"
LABEL_FUNCTION = "gantry.function"

# Platform defaults, except: the node declares ample capacity (so placement never limits a
# measurement), and the per-key rate limits (invocations, coordination) are set high enough
# never to refuse the load test (the limiter's decision still runs on every request).
WORKER_ENV = {"GANTRY_NODE_CPU": "64", "GANTRY_NODE_MEMORY": "32Gi"}
GATEWAY_ENV = {"GANTRY_RATE_LIMIT": "100000000", "GANTRY_RATE_BURST": "100000000",
               "GANTRY_COORD_RATE_LIMIT": "100000000", "GANTRY_COORD_RATE_BURST": "100000000",
               "GANTRY_COLD_START_TIMEOUT": "60"}
SCHEDULER_ENV: dict[str, str] = {}


class BenchError(RuntimeError):
    pass


def _term_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench process dies, however it dies, so
    the worker agent still stops and removes its containers."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Stack:
    run_id: str
    tmp: str
    docker: object
    redis: OwnRedis | None = None
    api_key: str = ""
    port: int = 0
    node_id: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    client: Client | None = None
    worker_env: dict[str, str] = field(default_factory=lambda: dict(WORKER_ENV))

    @classmethod
    def create(cls, docker_client, worker_env: dict[str, str] | None = None) -> "Stack":
        """``worker_env`` replaces the worker's node settings (default: a node too large to
        limit any measurement; {} for this machine's own cores and memory)."""
        run_id = uuid.uuid4().hex[:8]
        return cls(run_id=run_id, tmp=tempfile.mkdtemp(prefix=f"gantry-bench-{run_id}-"), docker=docker_client,
                   node_id=f"bench-{run_id}", worker_env=dict(WORKER_ENV if worker_env is None else worker_env))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> dict:
        return {"worker": self.worker_env, "gateway": GATEWAY_ENV, "scheduler": SCHEDULER_ENV,
                "processes": "scheduler, gateway, worker: one process each (python -m gantry.daemons)",
                "redis": "own redis-server on a loopback port"}

    def start(self) -> None:
        import redis

        self.redis = OwnRedis.start()
        self.api_key = "gk_bench_" + uuid.uuid4().hex
        r = redis.Redis.from_url(self.redis.url)
        r.set(keys.ADMIN_KEY_HASH, hash_key(self.api_key))
        r.close()
        self.port = free_port()
        self.client = Client(self.url, self.api_key, timeout=120)     # the SDK: set-up and teardown only
        self._spawn("scheduler", "scheduler", SCHEDULER_ENV)
        self._spawn("gateway", "gateway", {**GATEWAY_ENV, "GANTRY_GATEWAY_PORT": str(self.port)})
        self._spawn("worker", "worker", {**self.worker_env, "GANTRY_NODE_ID": self.node_id})
        self.wait("the gateway and the worker node", self.client.nodes, 60)

    def _spawn(self, name: str, component: str, env: dict[str, str], wrap: list[str] | None = None) -> None:
        """Start COMPONENT as process NAME with ENV (under the command prefix WRAP, if given:
        valgrind, for gantry.bench.instructions)."""
        log = open(os.path.join(self.tmp, f"{name}.log"), "ab")     # a restarted process keeps what came before
        full_env = {**os.environ, "GANTRY_REDIS_URL": self.redis.url, "PYTHONUNBUFFERED": "1", **env}
        full_env.pop("GANTRY_API_KEY", None)
        self.procs[name] = subprocess.Popen([*(wrap or []), sys.executable, "-m", "gantry.daemons", component],
                                            env=full_env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_term_with_parent)
        log.close()

    def stop_process(self, name: str) -> None:
        """Stop one process the run started (an extra gateway) and forget it."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def logs(self, tail: int = 3000) -> str:
        out = []
        for name in sorted(os.listdir(self.tmp)):
            path = os.path.join(self.tmp, name)
            if name.endswith(".log") and os.path.isfile(path):
                with open(path, errors="replace") as f:
                    out.append(f"----- {name}\n{f.read()[-tail:]}")
        return "\n".join(out)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"the {name} process exited with {proc.returncode}\n{self.logs()}")

    def wait(self, what: str, predicate, timeout: float, every: float = 0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except GantryError as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            self.check_alive()
            time.sleep(every)
        raise BenchError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})\n{self.logs()}")

    # -- functions ---------------------------------------------------------------------------
    def deploy(self, spec: dict, image: str) -> int:
        return self.client.deploy_image(spec, image).version

    def function(self, name: str) -> dict:
        return self.client.get_function(name)

    def ready_instances(self, name: str, version: int | None = None) -> list[dict]:
        fn = self.function(name)
        return [i for i in fn["instances"] if i["state"] == state.READY and (version is None or i["version"] == version)]

    def instance_key(self, instance_id: str) -> str:
        """The instance's key (its record in Redis; the admin API never shows it): what a
        direct call to its container must send in wire.INSTANCE_KEY."""
        import redis

        r = redis.Redis.from_url(self.redis.url)
        try:
            inst = state.Instance.from_hash(r.hgetall(keys.instance(instance_id)))
        finally:
            r.close()
        if inst is None or not inst.key:
            raise BenchError(f"instance {instance_id} has no record with a key")
        return inst.key

    def delete(self, name: str) -> None:
        try:
            self.client.delete_function(name)
        except NotFound:
            pass

    def containers(self, function: str | None = None, instances_only: bool = False) -> list[dict]:
        """This run's containers (the low-level listing: no per-container inspect that a
        container removed meanwhile would turn into an error).  INSTANCES_ONLY: without what
        the worker keeps made ahead of need (worker/spares.py: a created container and its
        sandbox; an instance's sandbox goes with its container)."""
        labels = [f"{LABEL_NODE}={self.node_id}"]
        if function:
            labels.append(f"{LABEL_FUNCTION}={function}")
        found = self.docker.api.containers(all=True, filters={"label": labels})
        if instances_only:
            found = [c for c in found if not (c.get("Labels") or {}).get("gantry.sandbox")
                     and not ((c.get("Labels") or {}).get("gantry.spare") and c.get("State") == "created")]
        return found

    def wait_no_containers(self, function: str | None, timeout: float = 60) -> None:
        """Until no instance of FUNCTION (of the run) has a container (spares do not count)."""
        self.wait(f"no containers of {function or 'the run'}",
                  lambda: not self.containers(function, instances_only=True) or None, timeout, every=0.2)

    # -- teardown ----------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop the processes and Redis; force-remove any container still labelled with this
        run's node.  Returns what had to be forced (for the report)."""
        forced = []
        for name in ("gateway", "scheduler", "worker"):
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                forced.append(f"process {name} killed")
        try:
            import docker.errors

            for c in self.containers():
                try:
                    self.docker.api.remove_container(c["Id"], force=True)
                    forced.append(f"container {(c.get('Names') or [c['Id'][:12]])[0]} removed")
                except docker.errors.NotFound:
                    pass
        except Exception as exc:  # noqa: BLE001 - still stop Redis
            forced.append(f"listing containers failed: {exc!r}")
        if self.redis:
            self.redis.stop()
        return forced

"""The worker agent: registers its node, heartbeats, runs the scheduler's commands, watches
its instances' health, ships their logs and sweeps orphans.  One per node; the only holder
of the node's Docker socket.

Docker's SDK blocks, so every Docker call runs in the agent's own thread pool (a stop waits
out a drain grace; the default executor, sized by CPU count, would starve).  ``run`` drives
two poll loops: commands (BRPOP with a short timeout, each command a task serialised per
instance, so a draining stop never holds up a start) and maintenance (heartbeat, health,
logs, orphans, each when due).  ``_iteration`` is one pass of both, awaited to the end, for
tests.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import aiohttp
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from .. import state as st
from ..scheduler import gpulease
from ..store import UNAVAILABLE, Store, UnreadableRecord
from ..tenants import secretbox
from ..tenants.secretbox import MasterKey
from ..tenants.secretstore import SecretStore
from . import commands, containers, dockerconn, health, isolation, secretfiles, spares, vllmengine
from .containerspec import LABEL_FLAVOUR, LABEL_GPUS, LABEL_RUNTIME
from .fakenvml import from_setting as fake_nvml
from .gpus import GpuInventory
from .capacity import CpuMeter, detect_cpu_millis, detect_memory, memory_in_use
from .logship import LogFollower, LogShipper
from .orphans import find_orphans
from .settings import WorkerSettings

log = logging.getLogger("gantry.worker")

POP_BATCH = 64           # commands taken per pass
COMMAND_RETRY_FOR = 60.0  # seconds a command is run again while Redis cannot be reached
RETRY_MIN, RETRY_MAX = 0.1, 1.0   # seconds between tries while Redis is unreachable
# what a Redis call fails with while Redis is down or restarting
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_FROM_ENV = object()       # WorkerAgent's master_key default: GANTRY_SECRETS_KEY(_FILE)


class WorkerAgent:
    def __init__(self, settings: WorkerSettings, redis, docker_client, master_key: Any = _FROM_ENV,
                 nvml: Any = None) -> None:
        # one pool of kept-open connections for every Docker call (worker/dockerconn.py)
        self.settings, self.redis, self.docker_client = settings, redis, dockerconn.persistent(docker_client)
        self.store = Store(redis)
        # Opens the tenants' secrets a start delivers (worker.secretfiles); None: a function
        # that names secrets fails to start, saying so.  A key set but unusable stops us here.
        self.master_key: MasterKey | None = secretbox.from_env() if master_key is _FROM_ENV else master_key
        self.secret_store = SecretStore(redis)
        self.node_id = settings.node_id
        cpu = settings.cpu_millis or detect_cpu_millis()
        # NVML (worker/gpus.py), or the fake GPUs of GANTRY_FAKE_GPUS (tests only), or NVML given
        self.gpu_inventory = GpuInventory(fake_nvml(settings.fake_gpus, self.node_id) if settings.fake_gpus
                                          else nvml)
        devices = self.gpu_inventory.read()
        self.node = st.Node(id=self.node_id, host=settings.host, cpu=cpu,
                            memory=settings.memory or detect_memory(), gpus=len(devices), started=time.time(),
                            cpu_allocatable=int(round(cpu * settings.cpu_overcommit)), tenant=settings.node_tenant,
                            gpu_inventory=st.GpuDevice.encode_list(devices),
                            cpu_work=int(not devices or settings.gpu_node_cpu_work))
        self.has_gpus = bool(devices)
        # instance -> its GPU lease ("UUID=BYTES,..."), for the containers on this node: set at
        # start, read back from their gantry.gpus labels on a restart (register)
        self.gpu_leases: dict[str, str] = {}
        self._gpu_locks: dict[str, asyncio.Lock] = {}
        self._cpu_meter = CpuMeter()
        self.max_epoch = 0          # the highest epoch of an accepted command, in ...
        self.generation: str | None = None   # ... this generation of Redis's data (keys.GENERATION)
        self.refused = 0            # commands refused for a stale epoch
        self.malformed = 0          # commands that could not be decoded
        self.executed = 0           # commands executed (successfully or not)
        self.followers: dict[str, LogFollower] = {}
        self.logs = LogShipper(settings.log_maxlen)
        self._containers: dict[str, tuple[str, str]] = {}   # instance -> (function, container id)
        # instance -> (runtime, engine flavour): which probes and which warm pool (vllmengine)
        self._engines: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, health.Counters] = {}
        self._starting: dict[str, float] = {}               # instance -> monotonic time seen starting
        self._users: dict[str, int] = {}                    # instance -> commands holding or awaiting its lock
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self._pool = ThreadPoolExecutor(settings.docker_threads, thread_name_prefix="gantry-docker")
        self._session: aiohttp.ClientSession | None = None
        # containers made ahead of need (worker/spares.py): function -> its spare, and what
        # its latest start command said (version, image, spec, isolation) to make the next from
        self.spares: dict[str, spares.Spare] = {}
        self._spare_sources: dict[str, tuple[int, str, Any, str]] = {}
        self._spare_locks: dict[str, asyncio.Lock] = {}
        self._spare_tasks: set[asyncio.Task] = set()
        self._tending: set[str] = set()          # functions with a tend_spare pass pending
        self._due = {"heartbeat": 0.0, "health": 0.0, "orphans": 0.0}
        self.registered = False
        self._closed = False

    # --- plumbing used by commands ---------------------------------------------------------

    async def blocking(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def gpu_memory(self, lease: str) -> int | None:
        """The total memory of the first GPU of LEASE, from this node's inventory (None when it
        leases none or the GPU is not known): a memory share's engine sizes itself by it."""
        ids = gpulease.uuids(lease)
        for device in st.GpuDevice.decode_list(self.node.gpu_inventory) if ids else ():
            if device.uuid == ids[0]:
                return device.memory
        return None

    def adopt(self, instance_id: str, function: str, container_id: str, since: float | None,
              runtime: str = "python3.11", flavour: str = "cpu", on_ready: Callable[[], None] | None = None) -> None:
        """Track the instance's container and follow its logs (from SINCE, or its beginning);
        ON_READY is called on the runtime's ready line (worker.readyreport)."""
        self._containers[instance_id] = (function, container_id)
        self._engines[instance_id] = (runtime, flavour)
        follower = self.followers.get(instance_id)
        if follower is None or not follower.alive or follower.container_id != container_id:
            self.followers[instance_id] = LogFollower(self.docker_client, container_id, function, instance_id,
                                                      self.logs, since=since, on_ready=on_ready).start()

    def forget(self, instance_id: str) -> None:
        """Stop tracking the instance, whose container is gone: its secret files go too."""
        secretfiles.remove(self.settings.secrets_dir, self.node_id, instance_id)
        self._containers.pop(instance_id, None)
        self._engines.pop(instance_id, None)
        self._counters.pop(instance_id, None)
        self._starting.pop(instance_id, None)
        self.gpu_leases.pop(instance_id, None)
        follower = self.followers.pop(instance_id, None)
        if follower is not None:
            follower.stop()

    def function_of(self, instance_id: str) -> str | None:
        known = self._containers.get(instance_id)
        return known[0] if known else None

    def runtime_of(self, instance_id: str) -> str:
        return self._engines.get(instance_id, ("python3.11", "cpu"))[0]

    def warm_mode(self, instance_id: str) -> str:
        """"pause" or "sleep": how this instance is kept warm (vllmengine.warm_mode)."""
        return vllmengine.warm_mode(*self._engines.get(instance_id, ("python3.11", "cpu")))

    def start_timeout(self, instance_id: str) -> float:
        """The worker's start timeout; at least vllmengine.START_TIMEOUT for an engine, which
        loads a model before it answers."""
        if self.runtime_of(instance_id) == vllmengine.RUNTIME:
            return max(self.settings.start_timeout, vllmengine.START_TIMEOUT)
        return self.settings.start_timeout

    async def probe(self, instance_id: str, port: int, state: str, key: str) -> tuple[bool, str]:
        """One probe of the instance on PORT: its runtime's path for STATE (health.probe_request)."""
        path, headers = health.probe_request(self.runtime_of(instance_id), state, key)
        return await health.probe(self.health_session(), f"http://{self.settings.host}:{port}",
                                  self.settings.health_timeout, path, headers)

    def started_at(self, instance_id: str, reset: bool = False) -> float:
        if reset:
            self._starting[instance_id] = time.monotonic()
        return self._starting.setdefault(instance_id, time.monotonic())

    @contextlib.asynccontextmanager
    async def gpu_starts(self, gpu_ids: list[str]):
        """Hold the start lock of each GPU (in UUID order, so two starts never wait on each
        other crosswise): one engine at a time profiles a GPU's memory (two vLLM engines
        starting at once on one GPU fail)."""
        async with contextlib.AsyncExitStack() as stack:
            for uuid in sorted(set(gpu_ids)):
                await stack.enter_async_context(self._gpu_locks.setdefault(uuid, asyncio.Lock()))
            yield

    def gpu_starting(self, uuid: str) -> bool:
        lock = self._gpu_locks.get(uuid)
        return lock is not None and lock.locked()

    @property
    def busy(self) -> set[str]:
        return {i for i, n in self._users.items() if n > 0}

    # --- registration and heartbeat ----------------------------------------------------------

    async def register(self) -> None:
        """Announce the node with its capacity and adopt the containers already running for it
        (after an agent restart): their logs are followed from now on."""
        await self.heartbeat()
        await self.store.announce_node(self.node_id)
        await self.blocking(isolation.refresh, self.docker_client)   # the host firewall, first thing
        # spares offered before a restart are not this agent's: the orphan sweep removes them
        await self.store.clear_spares(self.node_id)
        found = await self.blocking(containers.node_containers, self.docker_client, self.node_id)
        now = time.time()
        for container in found:
            if containers.is_sandbox(container.labels):
                continue
            instance_id = container.labels.get(containers.LABEL_INSTANCE, "")
            inst = await self.store.get_instance(instance_id) if instance_id else None
            if inst is not None and inst.node == self.node_id and container.status in ("running", "paused"):
                self.adopt(instance_id, inst.function, container.id, since=now,
                           runtime=container.labels.get(LABEL_RUNTIME, "python3.11"),
                           flavour=container.labels.get(LABEL_FLAVOUR, "cpu"))
                self._readopt_gpus(instance_id, inst, container.labels.get(LABEL_GPUS, ""))
        self.registered = True
        log.info("registered", extra={"node": self.node_id, "cpu": self.node.cpu, "memory": self.node.memory})

    def _readopt_gpus(self, instance_id: str, inst: st.Instance, label: str) -> None:
        """A restarted worker's lease of an adopted container: its label is what the
        container was given; the record is what the scheduler accounts.  They agree unless
        the record was rewritten, which is logged (the container keeps its GPUs)."""
        if label:
            self.gpu_leases[instance_id] = label
        if label != inst.gpu_lease:
            log.warning("instance %s: its container holds GPUs %r, its record %r", instance_id, label or "none",
                        inst.gpu_lease or "none")

    async def heartbeat(self) -> None:
        """Refresh node_alive and the node record (with what the node really uses now, and
        whole, so a pruned node comes back)."""
        self.node.used_cpu = self._cpu_meter.sample(self.node.cpu)
        self.node.used_memory = memory_in_use()
        if self.has_gpus:       # free memory and utilisation now (a node without GPUs never looks again)
            devices = await self.blocking(self.gpu_inventory.read)
            self.node.gpus, self.node.gpu_inventory = len(devices), st.GpuDevice.encode_list(devices)
        await self.store.heartbeat(self.node, self.settings.heartbeat_ttl)

    async def deregister(self) -> None:
        await self.store.deregister_node(self.node_id)
        self.registered = False

    # --- commands ----------------------------------------------------------------------------

    async def _pop(self, block: float) -> list[bytes]:
        return await self.store.pop_commands(self.node_id, block, POP_BATCH)

    async def _dispatch(self, raws: list[bytes]) -> list[asyncio.Task]:
        """Fence the commands by epoch and start a task for each accepted one, in order."""
        if not raws:
            return []
        generation, leader = await self.store.fence_floor()
        if generation != self.generation:
            if self.generation is not None:
                # Redis lost its data: its epochs start again at 1.  Accept the new series
                # (never a lower epoch within one series) and register the node again.
                log.warning("Redis lost its data (a new generation): accepting its epochs from %d", leader,
                            extra={"node": self.node_id, "was": self.max_epoch})
                self.max_epoch = 0
                await self.heartbeat()
                await self.store.announce_node(self.node_id)
            self.generation = generation
        tasks = []
        for raw in raws:
            cmd = commands.decode(raw)
            if cmd is None:
                self.malformed += 1
                log.warning("malformed command dropped", extra={"node": self.node_id, "command": raw[:200]})
                continue
            epoch = int(cmd.get("epoch", 0))
            floor = max(self.max_epoch, leader)
            if epoch < floor:
                self.refused += 1
                log.warning("refused a command with a stale epoch",
                            extra={"node": self.node_id, "op": cmd["op"], "instance": cmd["instance"],
                                   "epoch": epoch, "floor": floor})
                continue
            self.max_epoch = max(self.max_epoch, epoch)
            instance_id = cmd["instance"]
            self._users[instance_id] = self._users.get(instance_id, 0) + 1
            lock = self._locks.setdefault(instance_id, asyncio.Lock())
            task = asyncio.create_task(self._execute(cmd, lock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        return tasks

    async def _execute(self, cmd: dict, lock: asyncio.Lock) -> None:
        instance_id = cmd["instance"]
        try:
            async with lock:
                await self._execute_riding_out_redis(cmd)
        except Exception:
            log.exception("command failed", extra={"op": cmd["op"], "instance": instance_id})
        finally:
            self.executed += 1
            self._users[instance_id] -= 1
            if self._users[instance_id] <= 0:
                self._users.pop(instance_id, None)
                self._locks.pop(instance_id, None)

    async def _execute_riding_out_redis(self, cmd: dict) -> None:
        """Run the command; while Redis cannot be reached, run it again (every command is
        idempotent) for up to COMMAND_RETRY_FOR seconds instead of dropping it: a start lost
        to a Redis restart left its instance pending until the start timeout."""
        deadline = time.monotonic() + COMMAND_RETRY_FOR
        while True:
            try:
                await commands.execute(self, cmd)
                return
            except UNAVAILABLE as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("command waits for Redis", extra={"op": cmd["op"], "instance": cmd["instance"],
                                                              "error": repr(exc)})
                await asyncio.sleep(0.5)

    async def wait_commands(self, timeout: float | None = None) -> bool:
        """Wait for the commands in flight; True if none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return not self._tasks

    # --- health ------------------------------------------------------------------------------

    async def check_health(self) -> None:
        """One GET /healthz of every starting/ready/unhealthy instance of this node, at once."""
        ids = await self.store.instance_ids(node=self.node_id) | set(self._containers)
        busy = self.busy
        targets = [inst for inst in await self.store.get_instances(ids)
                   if inst.node == self.node_id and inst.state in st.RUNNING_STATES and inst.port
                   and inst.id not in busy]
        for gone in set(self._counters) - {inst.id for inst in targets}:
            self._counters.pop(gone, None)
        self.health_session()
        await asyncio.gather(*(self._check(inst) for inst in targets))

    def health_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A fresh loopback connection per probe: a kept-alive one that the runtime closed
            # would read as a failed check.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self._session

    async def _check(self, inst: st.Instance) -> None:
        ok, error = await self.probe(inst.id, inst.port, inst.state, inst.key)
        if not ok:
            ended = await self.container_ended(inst.id)
            if ended is not None:
                await self._fail(inst, ended.reason())
                return
            timeout = self.start_timeout(inst.id)
            if inst.state == st.STARTING and time.monotonic() - self.started_at(inst.id) > timeout:
                await self._fail(inst, f"not healthy within {timeout:g}s: {error}")
                return
        counters = self._counters.setdefault(inst.id, health.Counters())
        new = health.transition(inst.state, counters, ok, error)
        if new is not None and await self.store.move_instance(
                inst.id, new, (inst.state,), reason=counters.last_error if new == st.UNHEALTHY else ""):
            log.info("instance %s", new, extra={"instance": inst.id, "reason": counters.last_error})
            if new == st.READY:
                self._starting.pop(inst.id, None)

    async def container_ended(self, instance_id: str) -> containers.Exited | None:
        """None while the instance's container runs (or is paused); otherwise how it ended."""
        known = self._containers.get(instance_id)
        container_id = known[1] if known else None
        if container_id is None:
            found = await self.blocking(containers.find, self.docker_client, self.node_id, instance_id)
            container_id = found.id if found is not None else None
        if container_id is None:
            return containers.Exited("gone", None, False, "")
        return await self.blocking(containers.exited, self.docker_client, container_id)

    async def _fail(self, inst: st.Instance, reason: str) -> None:
        if await self.store.move_instance(inst.id, st.FAILED, st.RUNNING_STATES, reason=reason[:500]):
            log.warning("instance failed", extra={"instance": inst.id, "reason": reason})
        self._counters.pop(inst.id, None)
        self._starting.pop(inst.id, None)

    # --- containers made ahead of need (worker/spares.py) --------------------------------------

    def note_start(self, function: str, version: int, image: str, spec, isolation_level: str, lease: str) -> None:
        """A start command of FUNCTION ran here: what its spare is made from (if it may have one)."""
        if self.settings.precreate and spares.eligible(spec, lease):
            self._spare_sources[function] = (version, image, spec, isolation_level)

    def claim_spare(self, function: str, instance_id: str) -> spares.Spare | None:
        """The spare the scheduler gave INSTANCE_ID (its id is the spare's), now the instance's."""
        spare = self.spares.get(function)
        if spare is None or spare.instance != instance_id or not spare.container:
            return None
        del self.spares[function]
        return spare

    def tend_spare_soon(self, function: str) -> None:
        """tend_spare in the background: neither a command nor the maintenance loop (whose
        heartbeat must not wait on Docker) waits for a spare; one pending pass per function."""
        if function not in self._spare_sources and function not in self.spares:
            return
        if function in self._tending:
            return
        self._tending.add(function)
        task = asyncio.create_task(self._tend_logged(function))
        self._spare_tasks.add(task)
        task.add_done_callback(self._spare_tasks.discard)

    async def wait_spares(self) -> None:
        """Wait for the spare work in flight (tests)."""
        while self._spare_tasks:
            await asyncio.gather(*set(self._spare_tasks), return_exceptions=True)

    async def _tend_logged(self, function: str) -> None:
        try:
            self._tending.discard(function)     # a change from now on needs another pass
            await self.tend_spare(function)
        except Exception:
            log.exception("spare container", extra={"function": function})

    def tend_spares(self) -> None:
        for function in set(self._spare_sources) | set(self.spares):
            self.tend_spare_soon(function)

    async def tend_spare(self, function: str) -> None:
        """Keep one spare of FUNCTION while spares.wanted says so, made from its latest start
        command; withdraw and remove it otherwise (or when that command's version, image or
        isolation differs from the spare's)."""
        async with self._spare_locks.setdefault(function, asyncio.Lock()):
            source = self._spare_sources.get(function)
            want = False
            if source is not None:
                version, image, spec, isolation_level = source
                try:
                    fn = await self.store.get_function(function)
                except UnreadableRecord:
                    fn = False                                   # unreadable: no spare, source kept
                if fn is None:
                    self._spare_sources.pop(function, None)     # deleted
                elif fn:
                    counted = sum(1 for i in await self.store.function_instances(function)
                                  if i.state in st.LIVE_STATES or i.state in st.WARM_STATES)
                    want = spares.wanted((fn.active, fn.latest), version, counted, spec.scaling.max_instances)
            spare = self.spares.get(function)
            if spare is not None and (not want or not spare.serves(*source[:2], source[3])):
                await self._drop_spare(spare)
                spare = None
            if want and spare is None and not self._closed and len(self.spares) < spares.MAX_PER_NODE:
                await self._make_spare(function, *source)

    async def _make_spare(self, function: str, version: int, image: str, spec, isolation_level: str) -> None:
        spare = spares.Spare(function, spares.new_id(function), version, image, isolation_level)
        self.spares[function] = spare           # held from now: the orphan sweep leaves it
        try:
            await self.blocking(spares.make, self.docker_client, self.node_id, self.settings.host, spec, spare,
                                self.settings.drain_grace)
            await self.store.offer_spare(self.node_id, function, spare.entry)
        except Exception as exc:
            self.spares.pop(function, None)
            await self.blocking(spares.remove, self.docker_client, self.node_id, spare.instance)
            log.warning("no spare container for %s: %s", function, exc, extra={"function": function})
            return
        log.info("spare container ready", extra={"function": function, "instance": spare.instance,
                                                  "version": version})

    async def _drop_spare(self, spare: spares.Spare) -> None:
        """Withdraw the spare and remove its containers; one the scheduler took already is the
        instance's now (its start command claims it, or the orphan sweep removes it)."""
        if self.spares.get(spare.function) is spare:
            del self.spares[spare.function]
        if await self.store.withdraw_spare(self.node_id, spare.function, spare.entry) or not spare.container:
            await self.blocking(spares.remove, self.docker_client, self.node_id, spare.instance)
            log.info("spare container removed", extra={"function": spare.function, "instance": spare.instance})

    # --- orphans -----------------------------------------------------------------------------

    async def sweep_orphans(self) -> int:
        """Force-remove this node's containers that no instance record owns; how many.  Also
        puts back the tenant isolation rules if something (a firewall reload) removed them."""
        await self.blocking(isolation.refresh, self.docker_client)
        found = await self.blocking(containers.node_containers, self.docker_client, self.node_id)
        self.tend_spares()      # in the background: made or withdrawn ones are registered at once
        held = self.busy | {s.instance for s in self.spares.values()}
        orphans = await find_orphans(self.store, self.node_id, found, held)
        for container in orphans:
            instance_id = container.labels.get(containers.LABEL_INSTANCE, "")
            log.info("removing orphan container", extra={"container": container.short_id, "instance": instance_id})
            await self.blocking(containers.force_remove, self.docker_client, container)
            if instance_id and instance_id not in self.busy:
                self.forget(instance_id)
        # Secret files whose container is gone (removed while this agent was down, or a
        # crash between writing them and creating it); a start in progress is busy.
        keep = {c.labels.get(containers.LABEL_INSTANCE, "") for c in found if c not in orphans} | held
        for gone in await self.blocking(secretfiles.sweep, self.settings.secrets_dir, self.node_id, keep):
            log.info("removed secret files of a gone instance", extra={"instance": gone})
        return len(orphans)

    # --- loops -------------------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Heartbeat, health, logs, orphans: each when due."""
        now = time.monotonic()
        if now >= self._due["heartbeat"]:
            self._due["heartbeat"] = now + self.settings.heartbeat_interval
            await self.heartbeat()
        if now >= self._due["health"]:
            self._due["health"] = now + self.settings.health_interval
            await self.check_health()
        await self.logs.flush(self.store)
        if now >= self._due["orphans"]:
            self._due["orphans"] = now + self.settings.orphan_interval
            await self.sweep_orphans()

    async def _iteration(self) -> None:
        """One pass: heartbeat if due, the commands waiting (executed to the end), health if
        due, logs, orphan sweep if due."""
        now = time.monotonic()
        if now >= self._due["heartbeat"]:
            self._due["heartbeat"] = now + self.settings.heartbeat_interval
            await self.heartbeat()
        tasks = await self._dispatch(await self._pop(0))
        if tasks:
            await asyncio.wait(tasks)
        await self._maintain()

    async def _command_loop(self, stop_event: asyncio.Event) -> None:
        """Pop and dispatch commands until STOP_EVENT.  While Redis is unreachable, retry
        every RETRY_MAX at most; commands popped but not yet dispatched (the fence check
        failed) are kept and dispatched first, never dropped."""
        backoff = RETRY_MIN
        popped: list[bytes] = []
        while not stop_event.is_set():
            try:
                if not popped:
                    popped = await self._pop(self.settings.command_block)
                await self._dispatch(popped)
                popped = []
                backoff = RETRY_MIN
            except _UNREACHABLE as exc:
                log.warning("command loop: Redis unreachable (%r); retrying in %.1fs", exc, backoff,
                            extra={"node": self.node_id})
                await _wait(stop_event, backoff)
                backoff = min(backoff * 2, RETRY_MAX)
            except Exception:
                popped = []          # a bug, not Redis: do not loop on the same commands
                log.exception("command loop", extra={"node": self.node_id})
                await _wait(stop_event, backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Run until STOP_EVENT is set (registering first if needed); in-flight commands are
        awaited on the way out.  The caller then calls shutdown()."""
        if not self.registered:
            await self.register()
        tick = max(0.05, min(self.settings.heartbeat_interval, self.settings.health_interval, 0.25))
        commands_task = asyncio.create_task(self._command_loop(stop_event))
        down_since = None        # monotonic time Redis became unreachable (None: reachable)
        try:
            while not stop_event.is_set():
                try:
                    await self._maintain()
                    if down_since is not None:
                        log.info("Redis reachable again after %.1fs", time.monotonic() - down_since,
                                 extra={"node": self.node_id})
                        down_since = None
                except _UNREACHABLE as exc:   # heartbeats resume once Redis is back
                    if down_since is None:
                        down_since = time.monotonic()
                        log.warning("Redis unreachable (%r); retrying every %gs", exc, tick,
                                    extra={"node": self.node_id})
                except Exception:
                    log.exception("maintenance pass", extra={"node": self.node_id})
                await _wait(stop_event, tick)
        finally:
            if not stop_event.is_set():
                commands_task.cancel()
            await asyncio.gather(commands_task, return_exceptions=True)
            await self.wait_commands(self.settings.drain_grace + containers.STOP_MARGIN + 5)

    async def shutdown(self, remove_containers: bool) -> None:
        """Stop following logs; with REMOVE_CONTAINERS, drain, stop and remove every container of
        this node and mark its instance stopped; then deregister (node_alive goes at once).
        A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if not await self.wait_commands(self.settings.drain_grace + containers.STOP_MARGIN + 5):
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # a spare being made finishes (its Docker calls run on in their thread even if its task
        # were cancelled), then goes with the others; _closed stops new ones
        await self.wait_spares()
        for spare in list(self.spares.values()):   # spares go whatever happens to the instances
            try:
                await self._drop_spare(spare)
            except Exception as exc:  # noqa: BLE001 - Redis unreachable: the containers go anyway
                log.warning("spare of %s not withdrawn (%r): removing it", spare.function, exc)
                await self.blocking(spares.remove, self.docker_client, self.node_id, spare.instance)
        if remove_containers:
            found = [c for c in await self.blocking(containers.node_containers, self.docker_client, self.node_id)
                     if not containers.is_sandbox(c.labels)]    # removed with their container
            instance_ids = {c.labels.get(containers.LABEL_INSTANCE, "") for c in found}
            await asyncio.gather(*(self._stop_any(i, c) for i, c in
                                   ((c.labels.get(containers.LABEL_INSTANCE, ""), c) for c in found)),
                                 return_exceptions=True)
            for instance_id in instance_ids:
                self.forget(instance_id)
            # sandboxes go with their container; one whose container was gone already, now
            for c in await self.blocking(containers.node_containers, self.docker_client, self.node_id):
                if containers.is_sandbox(c.labels):
                    await self.blocking(containers.force_remove, self.docker_client, c)
        for follower in self.followers.values():
            follower.stop()
        self.followers.clear()
        try:
            await self.logs.flush(self.store)
        finally:
            await self.deregister()
            if self._session is not None:
                await self._session.close()
                self._session = None
            self._pool.shutdown(wait=False)

    async def _stop_any(self, instance_id: str, container) -> None:
        if instance_id:
            await commands.stop(self, instance_id)
        else:
            await self.blocking(containers.force_remove, self.docker_client, container)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass

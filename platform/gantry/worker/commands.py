"""The scheduler's commands, executed idempotently: start, stop, remove, pause, unpause.

A command is msgpack ``{"op", "instance", "epoch", ...}`` (``gantry.state.command``); start
also carries function, version, image and spec (a FunctionSpec dict).  Fencing (the epoch
check) happens in the agent before a command gets here.  Every state change is a
compare-and-set against the transition table (``Store.move_instance``), so a command never
resurrects a reaped record or undoes a newer decision.

pause (the scheduler set ``pausing``: no traffic is routed to it any more) waits until the
runtime reports no invocation in flight (GET /healthz "inflight", twice in a row, at most
the drain grace), then freezes the container (`docker pause`) and sets ``paused``.  unpause
(the scheduler set ``resuming``) thaws it and probes /healthz every FAST_PROBE until it
answers, then sets ``ready``; a container that is gone or exited fails the instance.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from .. import state as st
from ..manifest import FunctionSpec
from ..tenants.secretbox import KEY_ENV, KEY_FILE_ENV, SecretError
from ..scheduler import gpulease
from . import containers, health, isolation, secretfiles, spares, vllmengine
from .readyreport import ReadyReport
from .secretfiles import SecretFilesError

if TYPE_CHECKING:
    from .agent import WorkerAgent

log = logging.getLogger("gantry.worker")

OPS = ("start", "stop", "remove", "pause", "unpause")
FAST_PROBE = 0.01      # seconds between readiness probes of a fresh or resumed instance
FAST_WINDOW = 10.0     # seconds of fast probing before the health loop takes over
SETTLE_PROBE = 0.5     # seconds between looks at a GPU instance still starting (its GPUs' start lock held)
EXIT_CHECK = 0.1       # seconds between looks at whether a container that does not answer yet has exited
IDLE_PROBE = 0.02      # seconds between in-flight checks of a pausing instance
IDLE_CHECKS = 2        # "inflight": 0 this many times in a row before freezing
# Before counting in-flight work, let every gateway learn that the instance is pausing (the
# pub/sub hint arrives in milliseconds; a gateway that missed it rereads within its cache
# refresh interval, 1 s by default), so no request is sent after the count reached zero.
PAUSE_SETTLE = 1.0
ENGINE_CALL_TIMEOUT = 60.0   # seconds a vLLM engine may take to sleep or wake (a large model: seconds)


def decode(raw: bytes) -> dict[str, Any] | None:
    """The command, or None when it is not one (logged by the caller)."""
    try:
        cmd = st.unpack(raw)
    except Exception:
        return None
    if (not isinstance(cmd, dict) or cmd.get("op") not in OPS or not isinstance(cmd.get("instance"), str)
            or not cmd["instance"] or isinstance(cmd.get("epoch", 0), bool)
            or not isinstance(cmd.get("epoch", 0), int)):
        return None
    return cmd


async def execute(agent: "WorkerAgent", cmd: dict[str, Any]) -> None:
    op = cmd["op"]
    if op == "start":
        await start(agent, cmd)
    elif op == "stop":
        await stop(agent, cmd["instance"])
    elif op == "pause":
        await pause(agent, cmd["instance"])
    elif op == "unpause":
        await unpause(agent, cmd["instance"])
    else:
        await remove(agent, cmd["instance"])


async def _spec_and_image(agent: "WorkerAgent", cmd: dict, inst: st.Instance) -> tuple[FunctionSpec, str]:
    spec, image = cmd.get("spec"), cmd.get("image")
    if isinstance(spec, (bytes, bytearray)):
        spec = st.unpack(spec)
    if isinstance(spec, dict) and image:
        return FunctionSpec.from_dict(spec), image
    found = await agent.store.get_version(inst.function, int(cmd.get("version") or inst.version))
    if found is None:
        raise LookupError(f"function {inst.function!r} version {inst.version} is not deployed")
    image_found, spec_found = found
    return (FunctionSpec.from_dict(spec) if isinstance(spec, dict) else spec_found), image or image_found


async def start(agent: "WorkerAgent", cmd: dict[str, Any]) -> None:
    instance_id = cmd["instance"]
    inst = await agent.store.get_instance(instance_id)
    if inst is None or inst.node != agent.node_id:
        log.warning("start ignored: no record of the instance on this node", extra={"instance": instance_id})
        return
    if inst.state not in (st.PENDING, *st.RUNNING_STATES):
        log.info("start ignored: instance is %s", inst.state, extra={"instance": instance_id})
        return
    lease = str(cmd.get("gpu_lease") or inst.gpu_lease or "")
    gpu_ids = gpulease.uuids(lease)
    if not gpu_ids:
        await _start(agent, cmd, inst, "")
        return
    # held from create until ready or failed (or the start timeout): see WorkerAgent.gpu_starts
    async with agent.gpu_starts(gpu_ids):
        if await _start(agent, cmd, inst, lease):
            await _await_settled(agent, instance_id)


async def _await_settled(agent: "WorkerAgent", instance_id: str) -> None:
    """Wait while the instance is still starting (the health loop makes it ready, or fails
    it at the start timeout), up to the start timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + agent.settings.start_timeout
    while loop.time() < deadline:
        if await agent.store.instance_state(instance_id) not in (st.PENDING, st.STARTING):
            return
        await asyncio.sleep(SETTLE_PROBE)


async def _start(agent: "WorkerAgent", cmd: dict[str, Any], inst: st.Instance, lease: str) -> bool:
    """Create and start the container and wait for the runtime (the fast window); True if
    the instance is starting or ready."""
    instance_id = inst.id
    try:
        spec, image = await _spec_and_image(agent, cmd, inst)
        version = int(cmd.get("version") or inst.version)
        secret_dir = await deliver_secrets(agent, spec, instance_id)
        isolation_level = isolation.level(cmd.get("isolation"), spec.tenant)
        agent.note_start(inst.function, version, image, spec, isolation_level, lease)
        # the container made ahead under this instance's id, if the scheduler gave it that id
        # and it is of this version, image and isolation (worker/spares.py)
        spare = agent.claim_spare(inst.function, instance_id)
        if spare is not None and not spare.serves(version, image, isolation_level):
            await agent.blocking(spares.remove, agent.docker_client, agent.node_id, instance_id)
            spare = None
        container_id, port, key = await agent.blocking(functools.partial(
            containers.start, agent.docker_client, agent.node_id, agent.settings.host, spec, image,
            instance_id, version, int(cmd.get("epoch", 0)), agent.settings.drain_grace, secret_dir=secret_dir,
            isolation_level=isolation_level, gpu_lease=lease, gpu_total=agent.gpu_memory(lease),
            precreated=spare.precreated if spare is not None else None))
    except Exception as exc:
        what = "secrets" if isinstance(exc, (SecretError, SecretFilesError)) else type(exc).__name__
        reason = f"start failed: {what}: {exc}"[:500]
        log.error("start failed", extra={"instance": instance_id, "error": reason})
        # no container to remove (or one that never started): its secret files go now
        await agent.blocking(secretfiles.remove, agent.settings.secrets_dir, agent.node_id, instance_id)
        await agent.store.move_instance(instance_id, st.FAILED, (st.PENDING, *st.RUNNING_STATES), reason=reason)
        agent.tend_spare_soon(inst.function)
        return False
    report = ReadyReport(asyncio.get_running_loop())   # the runtime's ready line wakes the probe
    agent.adopt(instance_id, inst.function, container_id, since=None, runtime=spec.runtime,
                flavour=vllmengine.flavour(spec) if spec.runtime == vllmengine.RUNTIME else "cpu",
                on_ready=report.notify)
    if lease:
        agent.gpu_leases[instance_id] = lease
    fields = {"host": agent.settings.host, "port": port, "key": key}
    if await agent.store.move_instance(instance_id, st.STARTING, reason="", **fields):
        agent.started_at(instance_id, reset=True)
        log.info("started", extra={"instance": instance_id, "port": port, "container": container_id[:12],
                                   "precreated": spare is not None})
        ready = await _await_ready(agent, instance_id, port, key=key, report=report)
        agent.tend_spare_soon(inst.function)    # the next start's container, once this one is up
        return ready or True
    if not await agent.store.move_instance(instance_id, None, st.RUNNING_STATES, **fields):
        # Drained, stopped or reaped while we started it: a stop command follows, or the
        # orphan sweep removes the container once the record is gone.
        log.info("started an instance that is no longer wanted", extra={"instance": instance_id})
        return False
    return True


async def deliver_secrets(agent: "WorkerAgent", spec: FunctionSpec, instance_id: str) -> str | None:
    """Open the secrets SPEC names (its tenant's, with this worker's master key) and write them
    as the instance's secret files; their directory, or None when it names none.  SecretError
    naming the secret and the tenant (never a value) when one is not set or does not open."""
    if not spec.secrets:
        return None
    where = f"tenant {spec.tenant!r}"
    if agent.master_key is None:
        raise SecretError(f"function {spec.name!r} of {where} needs secrets, and this worker has no master key: "
                          f"set {KEY_FILE_ENV} (or {KEY_ENV}) to the gateway's")
    names = sorted(set(spec.secrets.values()))
    sealed = await agent.secret_store.sealed(spec.tenant, names)
    missing = [n for n in names if n not in sealed]
    if missing:
        raise SecretError(f"{where} has no secret named {', '.join(repr(n) for n in missing)} "
                          "(removed since the deploy?): set it (gantry secrets set NAME)")
    values = {var: agent.master_key.open(spec.tenant, name, sealed[name]) for var, name in spec.secrets.items()}
    return await agent.blocking(secretfiles.write, agent.settings.secrets_dir, agent.node_id, instance_id, values)


async def _await_ready(agent: "WorkerAgent", instance_id: str, port: int, from_state: str = st.STARTING,
                       key: str = "", report: ReadyReport | None = None) -> bool:
    """Probe a fresh (or resumed) instance every FAST_PROBE seconds for up to FAST_WINDOW, so
    a request waiting for it is served as soon as the runtime answers, not at the next round
    of the health loop; then FROM_STATE -> ready.  False if it never answered in the window
    (for a fresh one the health loop and its start timeout take over), or if its container
    exited first: the instance is then failed at once with the cause (Exited.reason: the
    runtime's start-failure line), so the scheduler and a waiting caller learn it in well
    under a second rather than after the window.  With a REPORT (a fresh start), the wait
    between two probes ends early when the runtime logs its ready line (worker.readyreport)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FAST_WINDOW
    look_at = loop.time() + EXIT_CHECK
    reported = False    # this probe was woken by the ready report, not by the tick
    while loop.time() < deadline:
        ok, _ = await agent.probe(instance_id, port, from_state, key)
        if ok:
            if await agent.store.move_instance(instance_id, st.READY, (from_state,), reason=""):
                log.info("instance ready", extra={"instance": instance_id, "ready_report": reported})
            return True
        if loop.time() >= look_at:
            look_at = loop.time() + EXIT_CHECK
            ended = await agent.container_ended(instance_id)
            if ended is not None:
                reason = ended.reason()[:500]
                if await agent.store.move_instance(instance_id, st.FAILED, (from_state,), reason=reason):
                    log.warning("instance failed before it was ready", extra={"instance": instance_id,
                                                                              "reason": reason})
                return False
        if report is None:
            await asyncio.sleep(FAST_PROBE)
        else:
            reported = await report.wait(FAST_PROBE)
    return False


async def stop(agent: "WorkerAgent", instance_id: str) -> None:
    """stopping -> SIGTERM, the runtime drains within the grace -> remove -> stopped."""
    await agent.store.move_instance(instance_id, st.STOPPING, reason="")
    container = await agent.blocking(containers.stop, agent.docker_client, agent.node_id, instance_id,
                                   agent.settings.drain_grace)
    if container is not None:
        follower = agent.followers.get(instance_id)
        if follower is not None:   # let it read the container's last lines (the drain's log)
            await agent.blocking(follower.join, 1.0)
        await agent.blocking(containers.force_remove, agent.docker_client, container)
    function = agent.function_of(instance_id)
    agent.forget(instance_id)
    await agent.store.move_instance(instance_id, st.STOPPED, (st.STOPPING,), reason="")
    log.info("stopped", extra={"instance": instance_id})
    if function:
        agent.tend_spare_soon(function)      # one fewer instance: another may start


async def remove(agent: "WorkerAgent", instance_id: str) -> None:
    """Force-remove at once (no drain) -> stopped."""
    container = await agent.blocking(containers.find, agent.docker_client, agent.node_id, instance_id)
    if container is not None:
        await agent.blocking(containers.force_remove, agent.docker_client, container)
    function = agent.function_of(instance_id)
    agent.forget(instance_id)
    await agent.store.move_instance(instance_id, st.STOPPED, reason="")
    log.info("removed", extra={"instance": instance_id})
    if function:
        agent.tend_spare_soon(function)


async def pause(agent: "WorkerAgent", instance_id: str) -> None:
    """pausing -> (in-flight work done, bounded by the drain grace) -> docker pause -> paused.
    Idempotent: a paused container stays paused.  A drain or resume that overtakes it (the
    state leaves pausing while it waits) ends it without freezing anything."""
    inst = await agent.store.get_instance(instance_id)
    if inst is None or inst.node != agent.node_id:
        log.warning("pause ignored: no record of the instance on this node", extra={"instance": instance_id})
        return
    if inst.state not in (st.PAUSING, st.PAUSED):
        log.info("pause ignored: instance is %s", inst.state, extra={"instance": instance_id})
        return
    if inst.state == st.PAUSING and inst.port and not await _await_idle(agent, instance_id, inst.port):
        log.info("pause abandoned: the instance left pausing", extra={"instance": instance_id})
        return
    if agent.warm_mode(instance_id) == "sleep":
        # A vLLM engine on a GPU sleeps (weights to host memory, KV cache freed) and keeps running.
        ok, error = await engine_sleep(agent, inst.port)
        if not ok:
            await agent.store.move_instance(instance_id, st.FAILED, (st.PAUSING, st.PAUSED),
                                            reason=f"engine sleep failed: {error}"[:500])
            return
        if await agent.store.move_instance(instance_id, st.PAUSED):
            log.info("engine asleep", extra={"instance": instance_id})
        return
    status, container_id = await agent.blocking(containers.pause, agent.docker_client, agent.node_id, instance_id)
    if status != "paused":
        await _fail_warm(agent, instance_id, (st.PAUSING, st.PAUSED), container_id)
        return
    if await agent.store.move_instance(instance_id, st.PAUSED):
        log.info("paused", extra={"instance": instance_id})
    # else: a resume or a drain came in between; its own command (queued behind this one,
    # or running next) thaws or stops the container


async def _await_idle(agent: "WorkerAgent", instance_id: str, port: int) -> bool:
    """Wait until the runtime reports no invocation in flight IDLE_CHECKS times in a row, or
    the drain grace has passed (it is then frozen with its work: thawed by a resume, ended by
    a stop).  False if the instance left ``pausing`` meanwhile."""
    session = agent.health_session()
    url = f"http://{agent.settings.host}:{port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + agent.settings.drain_grace
    await asyncio.sleep(PAUSE_SETTLE)
    idle = 0
    while True:
        if await agent.store.instance_state(instance_id) != st.PAUSING:
            return False
        count = await health.inflight(session, url, agent.settings.health_timeout, agent.runtime_of(instance_id))
        if count is None and await agent.container_ended(instance_id) is not None:
            return True                  # nothing runs: containers.pause says what happened
        idle = idle + 1 if count == 0 else 0
        if idle >= IDLE_CHECKS:
            return True
        if loop.time() >= deadline:
            log.warning("pausing with work still in flight after the drain grace",
                        extra={"instance": instance_id, "inflight": count})
            return True
        await asyncio.sleep(IDLE_PROBE)


async def unpause(agent: "WorkerAgent", instance_id: str) -> None:
    """resuming -> docker unpause -> /healthz answers (probed every FAST_PROBE) -> ready.
    Idempotent: a running container is only probed; a ready instance is left alone.  A
    container that is gone or exited fails the instance; one that does not answer within
    FAST_WINDOW turns unhealthy (the health loop and the scheduler take it from there)."""
    inst = await agent.store.get_instance(instance_id)
    if inst is None or inst.node != agent.node_id:
        log.warning("unpause ignored: no record of the instance on this node", extra={"instance": instance_id})
        return
    if inst.state != st.RESUMING:
        log.info("unpause ignored: instance is %s", inst.state, extra={"instance": instance_id})
        return
    t0 = time.perf_counter()
    if agent.warm_mode(instance_id) == "sleep":
        ok, error = await engine_wake(agent, inst.port)
        if not ok:
            await agent.store.move_instance(instance_id, st.FAILED, (st.RESUMING,),
                                            reason=f"engine wake failed: {error}"[:500])
            return
        if await _await_ready(agent, instance_id, inst.port, from_state=st.RESUMING, key=inst.key):
            log.info("engine awake %s: ready %.1f ms after the command", instance_id,
                     (time.perf_counter() - t0) * 1000, extra={"instance": instance_id})
        return
    status, container_id = await agent.blocking(containers.unpause, agent.docker_client, agent.node_id, instance_id)
    if status != "running" or container_id is None:
        await _fail_warm(agent, instance_id, (st.RESUMING,), container_id)
        return
    if instance_id not in agent.followers:      # adopted after a restart: follow its logs from now
        agent.adopt(instance_id, inst.function, container_id, since=time.time())
    thawed = time.perf_counter()
    if await _await_ready(agent, instance_id, inst.port, from_state=st.RESUMING, key=inst.key):
        log.info("resumed %s: ready %.1f ms after the command (docker unpause %.1f ms)", instance_id,
                 (time.perf_counter() - t0) * 1000, (thawed - t0) * 1000, extra={"instance": instance_id})
        return
    ended = await agent.container_ended(instance_id)
    if ended is not None:
        await agent.store.move_instance(instance_id, st.FAILED, (st.RESUMING,), reason=ended.reason()[:500])
        return
    if await agent.store.move_instance(instance_id, st.UNHEALTHY, (st.RESUMING,),
                          reason=f"/healthz did not answer within {FAST_WINDOW:g}s of unpause"):
        log.warning("resumed instance not healthy", extra={"instance": instance_id})


async def _fail_warm(agent: "WorkerAgent", instance_id: str, from_states: tuple[str, ...],
                     container_id: str | None) -> None:
    """A pause or unpause found no container to act on: fail the instance with the reason
    (the scheduler reaps it and, if still wanted, starts a replacement)."""
    ended = (await agent.blocking(containers.exited, agent.docker_client, container_id)
             if container_id else containers.Exited("gone", None, False, ""))
    reason = ended.reason() if ended is not None else "container not running"
    if await agent.store.move_instance(instance_id, st.FAILED, from_states, reason=reason[:500]):
        log.warning("instance failed", extra={"instance": instance_id, "reason": reason})


async def _engine_post(agent: "WorkerAgent", port: int, path: str) -> tuple[bool, str]:
    """POST one of vLLM's dev routes on the instance's loopback port (never through the
    gateway); (ok, error)."""
    import aiohttp

    url = f"http://{agent.settings.host}:{port}{path}"
    try:
        async with agent.health_session().post(url, timeout=aiohttp.ClientTimeout(total=ENGINE_CALL_TIMEOUT)) as resp:
            if resp.status == 200:
                return True, ""
            return False, f"{path} answered {resp.status}: {(await resp.text())[:200]}"
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        return False, f"{path}: {type(exc).__name__}: {exc}"[:300]


async def engine_sleep(agent: "WorkerAgent", port: int) -> tuple[bool, str]:
    """Sleep mode level 1 (GPU engines only: vllmengine.warm_mode)."""
    return await _engine_post(agent, port, f"/sleep?level={vllmengine.SLEEP_LEVEL}")


async def engine_wake(agent: "WorkerAgent", port: int) -> tuple[bool, str]:
    return await _engine_post(agent, port, "/wake_up")

"""The scheduler's commands, executed idempotently: start, stop, remove.

A command is msgpack ``{"op", "instance", "epoch", ...}`` (``gantry.state.command``); start
also carries function, version, image and spec (a FunctionSpec dict).  Fencing (the epoch
check) happens in the agent before a command gets here.  Every state change is a
compare-and-set (``keys.UPDATE_INSTANCE_FROM``), so a command never resurrects a reaped
record or undoes a newer decision.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .. import state as st
from ..manifest import FunctionSpec
from . import containers, health

if TYPE_CHECKING:
    from .agent import WorkerAgent

log = logging.getLogger("gantry.worker")

OPS = ("start", "stop", "remove")
ANY_STATE = " ".join((st.PENDING, st.STARTING, st.READY, st.UNHEALTHY, st.DRAINING, st.STOPPING,
                      st.STOPPED, st.FAILED))
RUNNING_STATES = (st.STARTING, st.READY, st.UNHEALTHY)
FAST_PROBE = 0.01      # seconds between readiness probes of a fresh instance
FAST_WINDOW = 10.0     # seconds of fast probing before the health loop takes over


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
    else:
        await remove(agent, cmd["instance"])


async def _spec_and_image(agent: "WorkerAgent", cmd: dict, inst: st.Instance) -> tuple[FunctionSpec, str]:
    spec, image = cmd.get("spec"), cmd.get("image")
    if isinstance(spec, (bytes, bytearray)):
        spec = st.unpack(spec)
    if isinstance(spec, dict) and image:
        return FunctionSpec.from_dict(spec), image
    found = await st.get_version(agent.redis, inst.function, int(cmd.get("version") or inst.version))
    if found is None:
        raise LookupError(f"function {inst.function!r} version {inst.version} is not deployed")
    image_found, spec_found = found
    return (FunctionSpec.from_dict(spec) if isinstance(spec, dict) else spec_found), image or image_found


async def start(agent: "WorkerAgent", cmd: dict[str, Any]) -> None:
    instance_id = cmd["instance"]
    inst = await agent.read_instance(instance_id)
    if inst is None or inst.node != agent.node_id:
        log.warning("start ignored: no record of the instance on this node", extra={"instance": instance_id})
        return
    if inst.state not in (st.PENDING, *RUNNING_STATES):
        log.info("start ignored: instance is %s", inst.state, extra={"instance": instance_id})
        return
    try:
        spec, image = await _spec_and_image(agent, cmd, inst)
        version = int(cmd.get("version") or inst.version)
        container_id, port = await agent.blocking(
            containers.start, agent.docker_client, agent.node_id, agent.settings.host, spec, image,
            instance_id, version, int(cmd.get("epoch", 0)), agent.settings.drain_grace)
    except Exception as exc:
        reason = f"start failed: {type(exc).__name__}: {exc}"[:500]
        log.error("start failed", extra={"instance": instance_id, "error": reason})
        await agent.update(instance_id, (st.PENDING, *RUNNING_STATES), state=st.FAILED, reason=reason)
        return
    agent.adopt(instance_id, inst.function, container_id, since=None)
    fields = {"host": agent.settings.host, "port": port}
    if await agent.update(instance_id, (st.PENDING,), state=st.STARTING, reason="", **fields):
        agent.started_at(instance_id, reset=True)
        log.info("started", extra={"instance": instance_id, "port": port, "container": container_id[:12]})
        await _await_ready(agent, instance_id, port)
    elif not await agent.update(instance_id, RUNNING_STATES, **fields):
        # Drained, stopped or reaped while we started it: a stop command follows, or the
        # orphan sweep removes the container once the record is gone.
        log.info("started an instance that is no longer wanted", extra={"instance": instance_id})


async def _await_ready(agent: "WorkerAgent", instance_id: str, port: int) -> None:
    """Probe a fresh instance every FAST_PROBE seconds for up to FAST_WINDOW, so a request
    waiting for a cold start is served as soon as the runtime is up, not at the next round
    of the health loop.  After the window the health loop (and its start timeout) takes over."""
    session = agent.health_session()
    deadline = asyncio.get_running_loop().time() + FAST_WINDOW
    while asyncio.get_running_loop().time() < deadline:
        ok, _ = await health.probe(session, f"http://{agent.settings.host}:{port}", agent.settings.health_timeout)
        if ok:
            if await agent.update(instance_id, (st.STARTING,), state=st.READY, reason=""):
                log.info("instance ready", extra={"instance": instance_id})
            return
        await asyncio.sleep(FAST_PROBE)


async def stop(agent: "WorkerAgent", instance_id: str) -> None:
    """stopping -> SIGTERM, the runtime drains within the grace -> remove -> stopped."""
    await agent.update(instance_id, ANY_STATE.split(), state=st.STOPPING, reason="")
    container = await agent.blocking(containers.stop, agent.docker_client, agent.node_id, instance_id,
                                   agent.settings.drain_grace)
    if container is not None:
        follower = agent.followers.get(instance_id)
        if follower is not None:   # let it read the container's last lines (the drain's log)
            await agent.blocking(follower.join, 1.0)
        await agent.blocking(containers.force_remove, agent.docker_client, container)
    agent.forget(instance_id)
    await agent.update(instance_id, (st.STOPPING,), state=st.STOPPED, reason="")
    log.info("stopped", extra={"instance": instance_id})


async def remove(agent: "WorkerAgent", instance_id: str) -> None:
    """Force-remove at once (no drain) -> stopped."""
    container = await agent.blocking(containers.find, agent.docker_client, agent.node_id, instance_id)
    if container is not None:
        await agent.blocking(containers.force_remove, agent.docker_client, container)
    agent.forget(instance_id)
    await agent.update(instance_id, ANY_STATE.split(), state=st.STOPPED, reason="")
    log.info("removed", extra={"instance": instance_id})

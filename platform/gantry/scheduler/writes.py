"""Every write the scheduler makes to Redis, each one atomic (a Lua script from
gantry.keys or a MULTI on one key's neighbours), and fenced by the leader's epoch wherever
it makes a worker act: a deposed leader's writes are refused in Redis, not just skipped by
the leader's own belief that it still leads.
"""
from __future__ import annotations

import time

from .. import keys, state
from ..manifest import FunctionSpec
from ..state import Instance

_LIVE = " ".join(state.LIVE_STATES)
_DRAINABLE = " ".join((*state.LIVE_STATES, *state.WARM_STATES))
_PAUSABLE = " ".join((state.READY, state.RESUMING))
_RESUMABLE = " ".join(state.WARM_STATES)


def start_command(inst: Instance, epoch: int, image: str, spec: FunctionSpec) -> bytes:
    return state.command("start", inst.id, epoch, function=inst.function, version=inst.version,
                         image=image, spec=spec.to_dict())


async def create_instance(r, epoch: int, inst: Instance, image: str, spec: FunctionSpec) -> bool:
    """Write the placed instance's record, add it to the function's and node's sets and
    queue its start command, in one fenced script.  False if our epoch is stale."""
    fields: list[str] = []
    for k, v in inst.to_hash().items():
        fields += [k, v]
    return bool(await r.eval(
        keys.CREATE_INSTANCE, 5, keys.LEADER_EPOCH, keys.instance(inst.id),
        keys.function_instances(inst.function), keys.node_instances(inst.node),
        keys.node_commands(inst.node), epoch, inst.id, start_command(inst, epoch, image, spec), *fields))


async def command_instance(r, epoch: int, inst: Instance, command: bytes, allowed: str = "",
                           fields: dict | None = None) -> int:
    """Set ``fields`` on the instance (if any) and queue ``command`` on its node, fenced.
    1 done, 0 stale epoch, -1 record gone or not in one of the ``allowed`` states."""
    args: list[str] = []
    for k, v in (fields or {}).items():
        args += [k, str(v)]
    return int(await r.eval(keys.COMMAND_INSTANCE, 4, keys.LEADER_EPOCH, keys.instance(inst.id),
                            keys.node_commands(inst.node), keys.EVENTS, epoch, allowed, command, *args))


async def drain(r, epoch: int, inst: Instance, why: str = "") -> int:
    """Set ``draining`` (the gateway stops routing to it) and send ``stop``; only while the
    instance is live or in the paused pool (a stopped or failed one is the reaper's)."""
    return await command_instance(r, epoch, inst, state.command("stop", inst.id, epoch), _DRAINABLE,
                                  {"state": state.DRAINING, "reason": why, "epoch": epoch})


async def pause(r, epoch: int, inst: Instance, now: float) -> int:
    """Set ``pausing`` (no new traffic) with ``paused_at`` and send ``pause``: the worker
    freezes the container once its in-flight work is done.  Only from ready or resuming."""
    return await command_instance(r, epoch, inst, state.command("pause", inst.id, epoch), _PAUSABLE,
                                  {"state": state.PAUSING, "reason": "scaled down", "paused_at": repr(now),
                                   "epoch": epoch})


async def resume(r, epoch: int, inst: Instance) -> int:
    """Set ``resuming`` and send ``unpause``; only from pausing or paused (a pause still in
    progress finishes first: the worker runs one instance's commands in order)."""
    return await command_instance(r, epoch, inst, state.command("unpause", inst.id, epoch), _RESUMABLE,
                                  {"state": state.RESUMING, "reason": "", "epoch": epoch})


async def resend_pause(r, epoch: int, inst: Instance) -> int:
    """Send ``pause`` again under our epoch (idempotent on the worker's side)."""
    return await command_instance(r, epoch, inst, state.command("pause", inst.id, epoch),
                                  state.PAUSING, {"epoch": epoch})


async def resend_unpause(r, epoch: int, inst: Instance) -> int:
    """Send ``unpause`` again under our epoch (idempotent on the worker's side)."""
    return await command_instance(r, epoch, inst, state.command("unpause", inst.id, epoch),
                                  state.RESUMING, {"epoch": epoch})


async def resend_stop(r, epoch: int, inst: Instance) -> int:
    """Send ``stop`` again under our epoch (a previous leader's may have been refused)."""
    return await command_instance(r, epoch, inst, state.command("stop", inst.id, epoch),
                                  state.DRAINING, {"epoch": epoch})


async def resend_start(r, epoch: int, inst: Instance, image: str, spec: FunctionSpec) -> int:
    """Send ``start`` again under our epoch for a still-pending instance (the worker's start
    is idempotent: an existing container for the instance is reused)."""
    return await command_instance(r, epoch, inst, start_command(inst, epoch, image, spec),
                                  state.PENDING, {"epoch": epoch})


async def fail_and_remove(r, epoch: int, inst: Instance, reason: str) -> int:
    """Mark the instance failed (the reaper then releases it) and tell its worker to remove
    whatever it has for it."""
    return await command_instance(r, epoch, inst, state.command("remove", inst.id, epoch),
                                  _LIVE, {"state": state.FAILED, "reason": reason})


async def send_remove(r, epoch: int, inst: Instance) -> int:
    """Ask the worker to remove a failed instance's container (idempotent on its side)."""
    return await command_instance(r, epoch, inst, state.command("remove", inst.id, epoch))


async def reap(r, inst: Instance, release: bool = True) -> None:
    """Release the instance's capacity (once: RELEASE_CAPACITY's guard) and delete its
    record and set memberships.  Safe to repeat after a crash between the two steps.
    ``release=False`` on a dead node: its whole alloc record is dropped instead, and a
    release after that drop would leave a negative allocation behind."""
    if release:
        await r.eval(keys.RELEASE_CAPACITY, 2, keys.node_alloc(inst.node), keys.instance(inst.id))
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.instance(inst.id))
    pipe.srem(keys.function_instances(inst.function), inst.id)
    pipe.srem(keys.node_instances(inst.node), inst.id)
    await pipe.execute()


async def forget_ids(r, function: str | None, node: str | None, ids: list[str]) -> None:
    """Drop set members whose instance record no longer exists."""
    if not ids:
        return
    pipe = r.pipeline(transaction=False)
    if function:
        pipe.srem(keys.function_instances(function), *ids)
    if node:
        pipe.srem(keys.node_instances(node), *ids)
    await pipe.execute()


async def promote(r, epoch: int, name: str, latest: int, active: int, now: float | None = None) -> bool:
    """Move ``active`` to ``latest`` only if both are still what we decided on."""
    return bool(await r.eval(keys.PROMOTE_VERSION, 3, keys.LEADER_EPOCH, keys.function(name), keys.EVENTS,
                             epoch, name, str(latest), str(active),
                             repr(time.time() if now is None else now)))


async def set_pending_reason(r, name: str, reason: str) -> bool:
    return bool(await r.eval(keys.SET_PENDING_REASON, 2, keys.function(name), keys.EVENTS, name, reason))


async def forget_node(r, node_id: str, everything: bool) -> bool:
    """Drop a dead node's capacity record (everything=False) or the node itself (True),
    only while its alive key is still absent."""
    return bool(await r.eval(keys.FORGET_NODE, 6, keys.node_alive(node_id), keys.node_alloc(node_id),
                             keys.NODES, keys.node(node_id), keys.node_instances(node_id),
                             keys.node_commands(node_id), node_id, "all" if everything else "alloc"))

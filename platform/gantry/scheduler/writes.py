"""The scheduler's writes that make a worker act: each one fenced script of gantry.store
(the record change and the worker's command together, or neither), refused in Redis when a
newer leader exists, which the store raises as ``Deposed``.  Which state each may move an
instance to, and from where, is gantry.state.TRANSITIONS; a refused move returns False.
"""
from __future__ import annotations

import time

from .. import state
from ..manifest import FunctionSpec
from ..state import Instance
from ..store import Store


def start_command(inst: Instance, epoch: int, image: str, spec: FunctionSpec, isolation: str = "") -> bytes:
    """ISOLATION: the tenant's level (worker/isolation.py: the network and firewall the worker
    puts the instance behind); "" leaves it out (the worker then assumes the tenant's floor)."""
    extra = {"isolation": isolation} if isolation else {}
    if inst.gpu_lease:
        extra["gpu_lease"] = inst.gpu_lease      # "UUID=BYTES,...": the worker gives exactly these GPUs
    return state.command("start", inst.id, epoch, function=inst.function, version=inst.version,
                         image=image, spec=spec.to_dict(), **extra)


async def create_instance(store: Store, epoch: int, inst: Instance, image: str, spec: FunctionSpec,
                          isolation: str = "") -> None:
    """Write the placed instance's record, add it to the function's and node's sets and
    queue its start command."""
    await store.create_instance(epoch, inst, start_command(inst, epoch, image, spec, isolation))


async def drain(store: Store, epoch: int, inst: Instance, why: str = "") -> bool:
    """``draining`` (the gateway stops routing to it) and ``stop``; from a live or paused
    state only (a stopped or failed one is the reaper's)."""
    return await store.command_instance(epoch, inst, state.command("stop", inst.id, epoch), state.DRAINING,
                                        fields={"reason": why, "epoch": epoch})


async def pause(store: Store, epoch: int, inst: Instance, now: float) -> bool:
    """``pausing`` (no new traffic) with ``paused_at``, and ``pause``: the worker freezes the
    container once its in-flight work is done."""
    return await store.command_instance(epoch, inst, state.command("pause", inst.id, epoch), state.PAUSING,
                                        fields={"reason": "scaled down", "paused_at": repr(now), "epoch": epoch})


async def resume(store: Store, epoch: int, inst: Instance) -> bool:
    """``resuming`` and ``unpause`` (a pause still in progress finishes first: the worker
    runs one instance's commands in order)."""
    return await store.command_instance(epoch, inst, state.command("unpause", inst.id, epoch), state.RESUMING,
                                        fields={"reason": "", "epoch": epoch})


async def fail_and_remove(store: Store, epoch: int, inst: Instance, reason: str) -> bool:
    """Mark a live instance failed (the reaper then releases it) and tell its worker to
    remove whatever it has for it."""
    return await store.command_instance(epoch, inst, state.command("remove", inst.id, epoch), state.FAILED,
                                        expect=state.LIVE_STATES, fields={"reason": reason})


async def send_remove(store: Store, epoch: int, inst: Instance) -> bool:
    """Ask the worker to remove a failed instance's container (idempotent on its side)."""
    return await store.command_instance(epoch, inst, state.command("remove", inst.id, epoch))


# A command the worker may never have carried out (sent by a previous leader whose epoch the
# worker then refused, or lost in a worker crash) is sent again under our epoch while the
# instance is still in the state that command left it in.  All of them are idempotent.
RESENT = {state.PENDING: "start", state.DRAINING: "stop", state.PAUSING: "pause", state.RESUMING: "unpause"}


async def resend(store: Store, epoch: int, inst: Instance, image: str = "",
                 spec: FunctionSpec | None = None, isolation: str = "") -> bool:
    """Send the command of ``RESENT[inst.state]`` again (start needs image and spec)."""
    op = RESENT[inst.state]
    command = (start_command(inst, epoch, image, spec, isolation) if op == "start"
               else state.command(op, inst.id, epoch))
    return await store.command_instance(epoch, inst, command, expect=(inst.state,), fields={"epoch": epoch})


async def promote(store: Store, epoch: int, name: str, latest: int, active: int,
                  now: float | None = None) -> bool:
    """Move ``active`` to ``latest`` only if both are still what we decided on."""
    return await store.promote_version(epoch, name, latest, active, time.time() if now is None else now)

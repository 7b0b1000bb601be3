"""Reaping: what to do with instances that are finished, stuck, or on dead nodes.

``triage`` is the decision (pure); ``tend`` carries it out and returns the instances that
still count for scaling.  Decisions, in order:

- on a node whose alive key expired: reap (its capacity record is dropped with the node);
- ``stopped`` or ``failed``: reap (a failed one's container is removed first, if its node
  is alive); the reconciler starts a replacement if the function still needs one;
- ``pending`` for longer than start_timeout: failed ("did not start"), removed, reaped;
- ``pending``, ``draining``, ``pausing`` or ``resuming`` under an older epoch: the previous
  leader's start, stop, pause or unpause may have been refused by the worker, so send it
  again under ours (all idempotent);
- ``unhealthy`` for longer than unhealthy_timeout (as seen by this leader): drained, so the
  reconciler starts a replacement (the worker only reports health; it never restarts).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .. import state
from ..state import Instance
from . import writes

log = logging.getLogger(__name__)

NODE_DEAD = "node_dead"
REAP = "reap"
TIMED_OUT = "timed_out"
RESEND_START = "resend_start"
RESEND_STOP = "resend_stop"
RESEND_PAUSE = "resend_pause"
RESEND_UNPAUSE = "resend_unpause"


# A command whose effect has not shown after COMMAND_TIMEOUT (the worker lost it: it crashed
# between taking it and carrying it out) is sent again; all of them are idempotent.
RESEND_STUCK = {state.DRAINING: RESEND_STOP, state.PAUSING: RESEND_PAUSE, state.RESUMING: RESEND_UNPAUSE}
COMMAND_TIMEOUT = 60.0


def triage(inst: Instance, live_nodes: set[str], now: float, epoch: int, start_timeout: float,
           stuck: bool = False) -> str | None:
    """What to do with one instance; ``stuck``: it has been in its state for COMMAND_TIMEOUT."""
    if inst.node not in live_nodes:
        return NODE_DEAD
    if inst.state in (state.STOPPED, state.FAILED):
        return REAP
    if inst.state == state.PENDING and now - inst.created > start_timeout:
        return TIMED_OUT
    if inst.state == state.PENDING and inst.epoch < epoch:
        return RESEND_START
    if inst.state == state.DRAINING and inst.epoch < epoch:
        return RESEND_STOP
    if inst.state == state.PAUSING and inst.epoch < epoch:
        return RESEND_PAUSE
    if inst.state == state.RESUMING and inst.epoch < epoch:
        return RESEND_UNPAUSE
    if stuck:
        return RESEND_STUCK.get(inst.state)
    return None


@dataclass
class Tended:
    kept: list[Instance] = field(default_factory=list)      # still count for their function
    failed: list[Instance] = field(default_factory=list)    # reaped as failed (crash backoff)
    stale_epoch: bool = False                               # a fenced write was refused


async def tend(r, epoch: int, instances: list[Instance], live_nodes: set[str], now: float,
               start_timeout: float, state_since: dict[str, tuple[str, float]] | None = None,
               unhealthy_timeout: float = 30.0) -> Tended:
    """``state_since`` (instance id -> (state, when this leader first saw it in that state))
    is the caller's memory across passes; None leaves unhealthy and stuck instances alone."""
    out = Tended()
    for inst in instances:
        stuck = False
        if state_since is not None and inst.node in live_nodes:
            seen = state_since.get(inst.id)
            if seen is None or seen[0] != inst.state:
                seen = state_since[inst.id] = (inst.state, now)
            age = now - seen[1]
            if inst.state == state.UNHEALTHY and age >= unhealthy_timeout:
                reason = f"unhealthy for {unhealthy_timeout:g}s"
                if await writes.drain(r, epoch, inst, reason) == 0:
                    out.stale_epoch = True
                    return out
                log.warning("instance %s of %s %s: replacing it", inst.id, inst.function, reason)
                del state_since[inst.id]
                continue
            if inst.state in RESEND_STUCK and age >= COMMAND_TIMEOUT:
                stuck = True
                state_since[inst.id] = (inst.state, now)      # resend at most once a timeout
                log.warning("instance %s of %s still %s after %gs: command sent again",
                            inst.id, inst.function, inst.state, COMMAND_TIMEOUT)
        action = triage(inst, live_nodes, now, epoch, start_timeout, stuck)
        if action is None:
            out.kept.append(inst)
            continue
        if action == NODE_DEAD:
            log.info("reaping %s (%s): node %s is dead", inst.id, inst.state, inst.node)
            await writes.reap(r, inst, release=False)      # the node's alloc is dropped whole
            continue
        if action == TIMED_OUT:
            reason = f"did not start within {start_timeout:g}s"
            done = await writes.fail_and_remove(r, epoch, inst, reason)
            if done == 0:
                out.stale_epoch = True
                return out
            log.warning("instance %s of %s %s", inst.id, inst.function, reason)
            inst.state, inst.reason = state.FAILED, reason
            action = REAP
        elif inst.state == state.FAILED:
            if await writes.send_remove(r, epoch, inst) == 0:
                out.stale_epoch = True
                return out
        if action == REAP:
            await writes.reap(r, inst)
            if inst.state == state.FAILED:
                out.failed.append(inst)
            continue
        if action == RESEND_START:
            version = await state.get_version(r, inst.function, inst.version)
            if version is None:        # the function was deleted: let it time out and go
                out.kept.append(inst)
                continue
            done = await writes.resend_start(r, epoch, inst, *version)
        elif action == RESEND_PAUSE:
            done = await writes.resend_pause(r, epoch, inst)
        elif action == RESEND_UNPAUSE:
            done = await writes.resend_unpause(r, epoch, inst)
        else:
            done = await writes.resend_stop(r, epoch, inst)
        if done == 0:
            out.stale_epoch = True
            return out
        inst.epoch = epoch
        out.kept.append(inst)
    return out

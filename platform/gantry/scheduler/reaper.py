"""Reaping: what to do with instances that are finished, stuck, or on dead nodes.

``triage`` is the decision (pure); ``tend`` carries it out and returns the instances that
still count for scaling.  Decisions, in order:

- on a dead node (its heartbeat stopped longer than node_dead_after ago, or a node no longer
  known): reap (its capacity record is dropped with the node).  On a *suspect* node (the
  heartbeat stopped more recently) nothing is reaped for that reason: the containers may
  well still serve, and a restarted worker adopts them;
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
from ..store import Store, UnreadableRecord
from . import writes

log = logging.getLogger(__name__)

NODE_DEAD = "node_dead"
REAP = "reap"
TIMED_OUT = "timed_out"
RESEND = "resend"

# A command whose effect has not shown after COMMAND_TIMEOUT (the worker lost it: it crashed
# between taking it and carrying it out) is sent again; all of them are idempotent.
RESEND_STUCK = frozenset({state.DRAINING, state.PAUSING, state.RESUMING})
COMMAND_TIMEOUT = 60.0


def triage(inst: Instance, live_nodes: set[str], now: float, epoch: int, start_timeout: float,
           stuck: bool = False, suspect_nodes: frozenset[str] | set[str] = frozenset()) -> str | None:
    """What to do with one instance; ``stuck``: it has been in its state for COMMAND_TIMEOUT."""
    if inst.node not in live_nodes and inst.node not in suspect_nodes:
        return NODE_DEAD
    if inst.state in (state.STOPPED, state.FAILED):
        return REAP
    if inst.state == state.PENDING and now - inst.created > start_timeout:
        return TIMED_OUT
    if inst.state in writes.RESENT and inst.epoch < epoch:
        return RESEND            # a previous leader's command may have been refused
    if stuck and inst.state in RESEND_STUCK:
        return RESEND
    return None


@dataclass
class Tended:
    kept: list[Instance] = field(default_factory=list)      # still count for their function
    failed: list[Instance] = field(default_factory=list)    # reaped as failed (crash backoff)


async def tend(store: Store, epoch: int, instances: list[Instance], live_nodes: set[str], now: float,
               start_timeout: float, state_since: dict[str, tuple[str, float]] | None = None,
               unhealthy_timeout: float = 30.0, suspect_nodes: frozenset[str] | set[str] = frozenset(),
               isolation=None) -> Tended:
    """``state_since`` (instance id -> (state, when this leader first saw it in that state))
    is the caller's memory across passes; None leaves unhealthy and stuck instances alone.
    ``isolation`` (tenancy.IsolationCache) gives a resent start its tenant's isolation level.
    Raises Deposed (from the store) if our epoch is stale."""
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
                await writes.drain(store, epoch, inst, reason)
                log.warning("instance %s of %s %s: replacing it", inst.id, inst.function, reason)
                del state_since[inst.id]
                continue
            if inst.state in RESEND_STUCK and age >= COMMAND_TIMEOUT:
                stuck = True
                state_since[inst.id] = (inst.state, now)      # resend at most once a timeout
                log.warning("instance %s of %s still %s after %gs: command sent again",
                            inst.id, inst.function, inst.state, COMMAND_TIMEOUT)
        action = triage(inst, live_nodes, now, epoch, start_timeout, stuck, suspect_nodes)
        if action is None:
            out.kept.append(inst)
            continue
        if action == NODE_DEAD:
            log.info("reaping %s (%s): node %s is dead", inst.id, inst.state, inst.node)
            await store.reap(inst, release=False)      # the node's alloc is dropped whole
            continue
        if action == TIMED_OUT:
            reason = f"did not start within {start_timeout:g}s"
            await writes.fail_and_remove(store, epoch, inst, reason)
            log.warning("instance %s of %s %s", inst.id, inst.function, reason)
            inst.state, inst.reason = state.FAILED, reason
            action = REAP
        elif inst.state == state.FAILED:
            await writes.send_remove(store, epoch, inst)
        if action == REAP:
            await store.reap(inst)
            if inst.state == state.FAILED:
                out.failed.append(inst)
            continue
        image, spec = "", None
        if inst.state == state.PENDING:
            try:
                version = await store.get_version(inst.function, inst.version)
            except UnreadableRecord:   # shown by the function's own reconcile; not ours to stop
                version = None
            if version is None:        # deleted or unreadable: let it time out and go
                out.kept.append(inst)
                continue
            image, spec = version
        level = await isolation.get(spec.tenant) if isolation is not None and spec is not None else ""
        await writes.resend(store, epoch, inst, image, spec, level)
        inst.epoch = epoch
        out.kept.append(inst)
    return out

"""Firing [[schedules]]: the leader, about once a second (``Ticker.maybe`` from each full
pass), reads each function's active spec and fires every tick gantry.scheduler.schedules
says is due, as an async invocation (gantry.invocations.store.InvocationStore.submit).

Exactly one invocation per tick, whatever the number of scheduler replicas: a tick is first
claimed in its schedule's record by a script fenced by the leader's epoch
(keys.SCHEDULE_CLAIM_TICK: only the current leader claims, and a mark only moves forward),
then submitted under the idempotency key "schedule:NAME:TICK" with an invocation id chosen
at the claim.  A leader that stopped between claim and submit leaves the claim `pending`:
the next pass, on whichever replica leads, submits that tick again with the same key and id,
and InvocationStore.submit answers "existing" if the first submit did land.

A schedule removed from the manifest, or a deleted function's, stops with the next pass (it
is no longer in any active spec) and its record is deleted, so one added again starts afresh.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from typing import Iterable

from ..invocations.store import InvocationStore
from ..manifest import FunctionSpec, Schedule
from ..store import UNAVAILABLE, Deposed, Store, UnreadableRecord
from .schedules import Record, decide, idempotency_key, resubmit, signature
from .schedulestore import ScheduleStore, active_spec

log = logging.getLogger(__name__)

INTERVAL = 1.0          # seconds between the leader's schedule passes
MAX_PER_PASS = 100      # ticks one schedule may fire in one pass (on-time ticks of a per-second cron)


def payload_body(schedule: Schedule) -> bytes:
    """The invocation's body: the payload as JSON (no body when there is none)."""
    return b"" if schedule.payload is None else json.dumps(schedule.payload, separators=(",", ":")).encode()


class Ticker:
    def __init__(self, redis, store: Store, catchup: float, retention: float, interval: float = INTERVAL) -> None:
        self.store = store
        self.schedules = ScheduleStore(redis)
        self.invocations = InvocationStore(redis)
        self.catchup = catchup
        self.retention = retention
        self.interval = interval
        self._next = 0.0               # monotonic time of the next pass

    async def maybe(self, names: Iterable[str], now: float, epoch: int) -> int:
        """``fire`` when an interval has passed since the last time; the invocations submitted."""
        if time.monotonic() < self._next:
            return 0
        self._next = time.monotonic() + self.interval
        return await self.fire(names, now, epoch)

    async def fire(self, names: Iterable[str], now: float, epoch: int) -> int:
        """Fire the due ticks of every schedule of NAMES (all deployed functions) at wall time
        NOW under EPOCH, and forget the records of schedules no longer in any of their active
        specs.  Raises Deposed (stop acting) and Redis's unavailability; one schedule's other
        failure is logged and the others go on."""
        active: set[tuple[str, str]] = set()
        unreadable: set[str] = set()
        submitted = 0
        for function in names:
            try:
                spec = await active_spec(self.store, function)
            except UnreadableRecord:
                unreadable.add(function)       # the reconciler reports it; keep its records
                continue
            if spec is None or not spec.schedules:
                continue
            records = await self.schedules.records((function, s.name) for s in spec.schedules)
            for schedule, record in zip(spec.schedules, records):
                active.add((function, schedule.name))
                try:
                    submitted += await self._schedule(spec, function, schedule, record, now, epoch)
                except (*UNAVAILABLE, Deposed):
                    raise
                except Exception:
                    log.exception("schedule %s of %s failed", schedule.name, function)
        stale = {p for p in await self.schedules.known() if p not in active and p[0] not in unreadable}
        await self.schedules.forget(epoch, stale)
        return submitted

    async def _schedule(self, spec: FunctionSpec, function: str, schedule: Schedule, record: Record,
                        now: float, epoch: int) -> int:
        submitted = 0
        if record.claimed is not None and resubmit(record, now, self.retention):
            log.info("schedule %s of %s: submitting claimed tick %d again", schedule.name, function, record.claimed)
            invocation = await self._submit(spec, function, schedule, record.claimed, record.pending, now)
            record = dataclasses.replace(record, pending="", fired=record.claimed, invocation=invocation)
            submitted += 1
        elif record.pending:
            log.warning("schedule %s of %s: tick %s was claimed but its submit is unknown and older than "
                        "the idempotency retention; abandoned", schedule.name, function, record.claimed)
        for _ in range(MAX_PER_PASS):
            decision = decide(schedule, record, now, self.catchup)
            if decision is None:
                break
            invocation = uuid.uuid4().hex
            if not await self.schedules.claim(epoch, function, schedule.name, record.claimed, decision, invocation,
                                              signature(schedule)):
                break                          # the record moved on meanwhile: decide again next pass
            if decision.missed:
                log.warning("schedule %s of %s: %d tick(s) missed while the platform was down were skipped",
                            schedule.name, function, decision.missed)
            record = dataclasses.replace(record, claimed=decision.mark, next=decision.next, sig=signature(schedule),
                                         missed=record.missed + decision.missed, pending="")
            if decision.fire is not None:
                invocation = await self._submit(spec, function, schedule, decision.fire, invocation, now)
                record = dataclasses.replace(record, fired=decision.fire, invocation=invocation)
                submitted += 1
        return submitted

    async def _submit(self, spec: FunctionSpec, function: str, schedule: Schedule, tick: int, invocation_id: str,
                      now: float) -> str:
        """Submit TICK's invocation (again, after a crash: the same key and id) and record it
        fired; the id of the invocation that holds the tick."""
        done = await self.invocations.submit(
            invocation_id, function, spec.tenant, spec.async_policy, payload_body(schedule), "application/json",
            priority=schedule.priority, idempotency_key=idempotency_key(schedule, tick),
            idempotency_ttl=self.retention, source="schedule", schedule=schedule.name, now=now)
        await self.schedules.fired(function, schedule.name, tick, done.id)
        return done.id

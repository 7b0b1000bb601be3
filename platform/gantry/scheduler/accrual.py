"""Reserved resource-seconds: the leader adds each instance's CPU, memory and GPU reservation
to its tenant's usage every ``accrue_interval`` (GANTRY_SCHEDULER_ACCRUE_INTERVAL, 15 s), and
Store.reap once more just before the capacity is given back, so an instance is charged from
its placement to its release.  Each accrual moves the instance's ``accrued_at`` in the same
script (keys.ACCRUE_INSTANCE): a new leader, or two callers at once, never count a second twice.
Seconds go to the bucket of the day the accrual runs (an interval across midnight UTC counts
on the later day: at most one interval per instance is misplaced)."""
from __future__ import annotations

import logging
import time

from ..state import Instance
from ..store import UNAVAILABLE, Deposed
from ..usage.store import UsageStore

log = logging.getLogger(__name__)


class Accrual:
    def __init__(self, redis, interval: float) -> None:
        self.store = UsageStore(redis)
        self.interval = interval
        self._next = 0.0               # monotonic time of the next accrual

    def due(self, mono: float | None = None) -> bool:
        return (time.monotonic() if mono is None else mono) >= self._next

    async def maybe(self, instances: list[Instance], now: float) -> int:
        """Accrue every instance in INSTANCES (their records: released ones add nothing) at
        wall time NOW when an interval has passed since the last time; the number accrued."""
        if not self.due():
            return 0
        self._next = time.monotonic() + self.interval
        done = 0
        for inst in instances:
            try:
                await self.store.accrue(inst, now)
                done += 1
            except (*UNAVAILABLE, Deposed):
                raise
            except Exception as exc:     # one odd record must not stop the others' accrual
                log.warning("usage accrual of %s failed: %r", inst.id, exc)
        return done

"""Choosing an instance for one request: least in-flight among ready instances with a free slot.

Deliberately plain: ``pick`` / ``release`` (plus ``update`` with the cache's ready set and
``suspend`` after a refusal) is the whole interface, so gantry.hotpath.router's weighted
router can replace it later.  In-flight counts are this gateway's own: with several gateway
replicas an instance can still be full, and then it answers 503 at_capacity and the request
is retried elsewhere.
"""
from __future__ import annotations

import time
from typing import Iterable

from ..state import Instance


class _Slot:
    __slots__ = ("instance", "inflight", "live", "suspended_until", "last")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.inflight = 0
        self.live = True
        self.suspended_until = 0.0
        self.last = 0          # pick sequence number: ties go to the least recently picked


class LeastInflight:
    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._slots: dict[str, _Slot] = {}
        self._seq = 0

    def update(self, instances: Iterable[Instance], capacity: int) -> None:
        """Replace the ready set.  Instances that left keep their counts until released."""
        self.capacity = max(1, capacity)
        seen = set()
        for inst in instances:
            seen.add(inst.id)
            slot = self._slots.get(inst.id)
            if slot is None:
                self._slots[inst.id] = _Slot(inst)
            else:
                slot.instance, slot.live = inst, True
        for inst_id, slot in list(self._slots.items()):
            if inst_id not in seen:
                slot.live = False
                if slot.inflight == 0:
                    del self._slots[inst_id]

    def pick(self, exclude: frozenset[str] | set[str] = frozenset(), now: float | None = None
             ) -> Instance | None:
        """The instance for the next request (one slot taken on it), or None if all are full."""
        now = time.monotonic() if now is None else now
        best: _Slot | None = None
        cap = self.capacity
        for inst_id, slot in self._slots.items():
            if (not slot.live or slot.inflight >= cap or inst_id in exclude
                    or slot.suspended_until > now):
                continue
            if best is None or (slot.inflight, slot.last) < (best.inflight, best.last):
                best = slot
        if best is None:
            return None
        self._seq += 1
        best.last = self._seq
        best.inflight += 1
        return best.instance

    def release(self, instance_id: str) -> None:
        slot = self._slots.get(instance_id)
        if slot is None or slot.inflight <= 0:
            return
        slot.inflight -= 1
        if not slot.live and slot.inflight == 0:
            del self._slots[instance_id]

    def suspend(self, instance_id: str, seconds: float, now: float | None = None) -> None:
        """Skip an instance for a while (it said draining, or refused the connection)."""
        slot = self._slots.get(instance_id)
        if slot is not None:
            slot.suspended_until = (time.monotonic() if now is None else now) + seconds

    @property
    def ready(self) -> int:
        return sum(1 for s in self._slots.values() if s.live)

    @property
    def inflight(self) -> int:
        return sum(s.inflight for s in self._slots.values())

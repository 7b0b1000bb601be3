"""Choosing an instance for one request, through the hot-path weighted router.

The gateway's view of a function's ready instances is kept in a
:class:`gantry.hotpath.router.Router` (Cython, or its Python twin): smooth weighted
round-robin on ``weight * free slots``, so idle instances share traffic, a slow one (whose
in-flight count grows) is offered less, and a full one is never chosen.  Membership changes
add or remove slots without rebuilding.  Per-request exclusions (instances a retry already
tried) and short suspensions (an instance answered "draining" or refused the connection)
are applied as health flags around the pick.

In-flight counts are this gateway's own: with several gateway replicas an instance can still
be full, and then it answers 503 at_capacity and the request is retried elsewhere.
"""
from __future__ import annotations

import itertools
import time
from typing import Iterable

from ..hotpath.router import Router
from ..state import Instance

DEFAULT_WEIGHT = 100
_seeds = itertools.count(1)


class Balancer:
    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._router = Router(next(_seeds))
        self._slots: dict[str, int] = {}          # instance id -> its live router slot
        self._live: dict[str, int] = {}           # instance id -> requests in flight on that slot
        # instance id -> [[slot, requests], ...]: slots removed with requests still in flight
        self._leaving: dict[str, list[list[int]]] = {}
        self._instances: dict[str, Instance] = {}
        self._suspended: dict[str, float] = {}    # instance id -> monotonic time it may be picked again

    def update(self, instances: Iterable[Instance], capacity: int) -> None:
        """Replace the ready set.  Instances that left keep their counts until released."""
        capacity = max(1, capacity)
        seen = set()
        for inst in instances:
            seen.add(inst.id)
            self._instances[inst.id] = inst
            slot = self._slots.get(inst.id)
            if slot is None:
                self._slots[inst.id] = self._router.add(inst.id, DEFAULT_WEIGHT, capacity,
                                                        inst.id not in self._suspended)
            elif capacity != self.capacity:
                self._router.set_capacity(slot, capacity)
        self.capacity = capacity
        for inst_id in [i for i in self._slots if i not in seen]:
            slot = self._slots.pop(inst_id)
            self._router.remove(slot)
            self._suspended.pop(inst_id, None)
            count = self._live.pop(inst_id, 0)
            if count:
                self._leaving.setdefault(inst_id, []).append([slot, count])
            elif inst_id not in self._leaving:
                self._instances.pop(inst_id, None)

    def pick(self, exclude: frozenset[str] | set[str] = frozenset(), now: float | None = None
             ) -> Instance | None:
        """The instance for the next request (one slot taken on it), or None if all are full."""
        if self._suspended:
            self._resume(time.monotonic() if now is None else now)
        hidden = [self._slots[i] for i in exclude if i in self._slots and i not in self._suspended]
        for slot in hidden:
            self._router.set_healthy(slot, False)
        try:
            slot = self._router.pick_acquire()
        finally:
            for s in hidden:
                self._router.set_healthy(s, True)
        if slot < 0:
            return None
        inst_id = self._router.instance(slot)
        self._live[inst_id] = self._live.get(inst_id, 0) + 1
        return self._instances[inst_id]

    def release(self, instance_id: str) -> None:
        """One request to the instance finished.  Requests are not told apart: a removed
        slot's count drains first, which keeps every total exact."""
        leaving = self._leaving.get(instance_id)
        if leaving:
            entry = leaving[0]
            self._router.release(entry[0])
            entry[1] -= 1
            if not entry[1]:
                leaving.pop(0)
            if not leaving:
                del self._leaving[instance_id]
                if instance_id not in self._slots:
                    self._instances.pop(instance_id, None)
        elif self._live.get(instance_id):
            self._router.release(self._slots[instance_id])
            self._live[instance_id] -= 1
            if not self._live[instance_id]:
                del self._live[instance_id]

    def suspend(self, instance_id: str, seconds: float, now: float | None = None) -> None:
        """Skip an instance for a while (it said draining, or refused the connection)."""
        slot = self._slots.get(instance_id)
        if slot is not None:
            self._suspended[instance_id] = (time.monotonic() if now is None else now) + seconds
            self._router.set_healthy(slot, False)

    def _resume(self, now: float) -> None:
        for inst_id, until in list(self._suspended.items()):
            if until <= now:
                del self._suspended[inst_id]
                slot = self._slots.get(inst_id)
                if slot is not None:
                    self._router.set_healthy(slot, True)

    @property
    def ready(self) -> int:
        return len(self._slots)

    @property
    def inflight(self) -> int:
        return sum(self._live.values()) + sum(n for entries in self._leaving.values() for _, n in entries)

"""Choosing an instance for one request, through the hot-path weighted router.

The gateway's view of a function's ready instances is kept in a
:class:`gantry.hotpath.router.Router` (Cython, or its Python twin): smooth weighted
round-robin on ``weight * free slots``, so idle instances share traffic, a slow one (whose
in-flight count grows) is offered less, and a full one is never chosen.  Membership changes
add or remove slots without rebuilding.  Per-request exclusions (instances a retry already
tried) and short suspensions (an instance answered "draining" or refused the connection)
are applied as health flags around the pick.

The router alone counts requests in flight, per slot.  ``pick`` hands out a :class:`Ticket`
naming the slot it counted on, and ``release`` gives exactly that count back: the router
keeps a removed slot (and never reuses its number) until its last request is released, so a
ticket stays good when its instance leaves the ready set, even if it comes back meanwhile.

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


class Ticket:
    """One request's place on an instance, from ``Balancer.pick`` until ``Balancer.release``."""

    __slots__ = ("slot", "instance")

    def __init__(self, slot: int, instance: Instance) -> None:
        self.slot = slot            # the router slot counted; -1 once released
        self.instance = instance


class Balancer:
    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, capacity)
        self._router = Router(next(_seeds))
        self._slots: dict[str, int] = {}          # ready instance id -> its router slot
        self._instances: dict[str, Instance] = {}  # ready instance id -> its latest record
        self._suspended: dict[str, float] = {}    # instance id -> monotonic time it may be picked again
        self._tickets = 0                         # tickets out: requests in flight

    def update(self, instances: Iterable[Instance], capacity: int) -> None:
        """Replace the ready set.  Tickets on instances that left stay good until released."""
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
            self._router.remove(self._slots.pop(inst_id))
            del self._instances[inst_id]
            self._suspended.pop(inst_id, None)

    def pick(self, exclude: frozenset[str] | set[str] = frozenset(), now: float | None = None
             ) -> Ticket | None:
        """A ticket for the next request (one slot taken on its instance), or None if all are
        full.  Give it back with ``release``."""
        if self._suspended:
            self._resume(time.monotonic() if now is None else now)
        if exclude:
            slot = self._pick_without(exclude)
        else:
            slot = self._router.pick_acquire()
        if slot < 0:
            return None
        self._tickets += 1
        return Ticket(slot, self._instances[self._router.instance(slot)])

    def _pick_without(self, exclude: frozenset[str] | set[str]) -> int:
        hidden = [self._slots[i] for i in exclude if i in self._slots and i not in self._suspended]
        for slot in hidden:
            self._router.set_healthy(slot, False)
        try:
            return self._router.pick_acquire()
        finally:
            for s in hidden:
                self._router.set_healthy(s, True)

    def release(self, ticket: Ticket) -> None:
        """The ticket's request finished.  Releasing a ticket twice does nothing."""
        if ticket.slot >= 0:
            self._router.release(ticket.slot)
            ticket.slot = -1
            self._tickets -= 1

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
        return self._tickets

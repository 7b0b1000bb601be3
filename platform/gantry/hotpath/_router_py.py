"""Weighted, load-aware instance router, the pure-Python twin of ext/_router_c.pyx.

Why smooth weighted round-robin (nginx's) with a load term: it is exact and deterministic
(over any run the picks follow the weights, with no random clumping, which at 16 instances
beats power-of-two-choices' sampling noise), O(n) over a short dense array, and integer-only
so the C and Python twins agree bit for bit.  Each pick, every eligible instance gains
``weight * free`` (``free = capacity - in_flight``), the largest accumulated score wins and
pays back the round's total.  So idle instances share traffic in proportion to
``weight * capacity``, and an instance that is slow (its in-flight count grows) is offered
less.  Unhealthy, zero-weight, full (``in_flight >= capacity``) and removed instances are
never chosen; with none eligible, ``pick`` returns -1.

The seed feeds a xorshift64 generator that staggers each new instance's starting score, so
gateway replicas started together do not all send their first requests to the same
instance.  A slot number stays valid until ``remove(slot)`` and the release of its last
in-flight request; only then is it reused.  So the slot ``pick_acquire`` returns is a ticket
(gateway.balancer hands it out as one): ``release(slot)`` gives back exactly that request,
even after the instance was removed or came back in another slot.  Weights and capacities
are integers in [0, 2**20] and [1, 2**20].
"""
from __future__ import annotations

_M64 = 0xFFFFFFFFFFFFFFFF
_LIMIT = 1 << 20
_FREE, _LIVE, _DRAINING = 0, 1, 2


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _check(weight: int, capacity: int) -> None:
    if not 0 <= weight <= _LIMIT:
        raise ValueError(f"weight must be an integer in [0, 2**20], got {weight!r}")
    if not 1 <= capacity <= _LIMIT:
        raise ValueError(f"capacity must be an integer in [1, 2**20], got {capacity!r}")


class Router:
    """Pick among ready instances by weight and free capacity; see the module docstring."""

    __slots__ = ("_rng", "_ids", "_state", "_healthy", "_weight", "_cap", "_inflight",
                 "_cur", "_active", "_pos", "_free")

    def __init__(self, seed: int = 0) -> None:
        self._rng = _splitmix64(seed & _M64) or 1
        self._ids: list = []
        self._state: list[int] = []
        self._healthy: list[bool] = []
        self._weight: list[int] = []
        self._cap: list[int] = []
        self._inflight: list[int] = []
        self._cur: list[int] = []
        self._active: list[int] = []  # live slots, iteration order of pick
        self._pos: list[int] = []  # slot -> index in _active
        self._free: list[int] = []

    def _next(self) -> int:
        x = self._rng
        x ^= (x << 13) & _M64
        x ^= x >> 7
        x ^= (x << 17) & _M64
        self._rng = x
        return x

    def add(self, instance, weight: int, capacity: int, healthy: bool = True) -> int:
        """Add an instance (any id); returns its slot."""
        weight, capacity = int(weight), int(capacity)
        _check(weight, capacity)
        if self._free:
            s = self._free.pop()
        else:
            s = len(self._state)
            for arr, v in ((self._ids, None), (self._state, _FREE), (self._healthy, False),
                           (self._weight, 0), (self._cap, 1), (self._inflight, 0),
                           (self._cur, 0), (self._pos, -1)):
                arr.append(v)
        self._ids[s] = instance
        self._state[s] = _LIVE
        self._healthy[s] = bool(healthy)
        self._weight[s] = weight
        self._cap[s] = capacity
        self._inflight[s] = 0
        self._cur[s] = self._next() % (weight * capacity + 1)
        self._pos[s] = len(self._active)
        self._active.append(s)
        return s

    def _live(self, slot: int) -> int:
        if not (0 <= slot < len(self._state)) or self._state[slot] != _LIVE:
            raise KeyError(f"no live instance in slot {slot}")
        return slot

    def remove(self, slot: int) -> None:
        """Stop choosing the instance; the slot is reused once its in-flight drains."""
        s = self._live(slot)
        last = self._active.pop()
        if last != s:
            i = self._pos[s]
            self._active[i] = last
            self._pos[last] = i
        self._pos[s] = -1
        self._state[s] = _DRAINING
        if self._inflight[s] == 0:
            self._free_slot(s)

    def _free_slot(self, s: int) -> None:
        self._state[s] = _FREE
        self._ids[s] = None
        self._free.append(s)

    def set_weight(self, slot: int, weight: int) -> None:
        s = self._live(slot)
        weight = int(weight)
        _check(weight, self._cap[s])
        self._weight[s] = weight
        self._cur[s] = 0

    def set_capacity(self, slot: int, capacity: int) -> None:
        s = self._live(slot)
        capacity = int(capacity)
        _check(self._weight[s], capacity)
        self._cap[s] = capacity

    def set_healthy(self, slot: int, healthy: bool) -> None:
        s = self._live(slot)
        if healthy and not self._healthy[s]:
            self._cur[s] = 0
        self._healthy[s] = bool(healthy)

    def instance(self, slot: int):
        if not (0 <= slot < len(self._state)) or self._state[slot] == _FREE:
            raise KeyError(f"no instance in slot {slot}")
        return self._ids[slot]

    def in_flight(self, slot: int) -> int:
        self.instance(slot)
        return self._inflight[slot]

    def __len__(self) -> int:
        return len(self._active)

    # -- the hot path ----------------------------------------------------------------------
    def pick(self) -> int:
        """The slot to send the next request to, or -1 when none is eligible."""
        best = -1
        best_cur = 0
        total = 0
        healthy, weight, cap, inflight, cur = (self._healthy, self._weight, self._cap,
                                               self._inflight, self._cur)
        for s in self._active:
            w = weight[s]
            free = cap[s] - inflight[s]
            if free <= 0 or w == 0 or not healthy[s]:
                continue
            e = w * free
            c = cur[s] + e
            cur[s] = c
            total += e
            if best < 0 or c > best_cur:
                best = s
                best_cur = c
        if best >= 0:
            cur[best] = best_cur - total
        return best

    def pick_acquire(self) -> int:
        """``pick`` and count one request in flight on the chosen slot."""
        s = self.pick()
        if s >= 0:
            self._inflight[s] += 1
        return s

    def acquire(self, slot: int) -> None:
        self._inflight[self._live(slot)] += 1

    def release(self, slot: int) -> None:
        """One request on the slot finished (also for a removed slot still draining)."""
        if not (0 <= slot < len(self._state)) or self._state[slot] == _FREE:
            raise KeyError(f"no instance in slot {slot}")
        if self._inflight[slot] <= 0:
            raise ValueError(f"slot {slot} has no request in flight")
        self._inflight[slot] -= 1
        if self._inflight[slot] == 0 and self._state[slot] == _DRAINING:
            self._free_slot(slot)

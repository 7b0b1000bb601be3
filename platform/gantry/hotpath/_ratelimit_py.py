"""Per-key rate limiter (GCRA), the pure-Python twin of ext/_ratelimit_c.pyx.

Why GCRA: it is a token bucket stored as one float per key (the theoretical arrival time,
``tat``), so a decision is a compare and an add, with no refill arithmetic and no
allocation, and the refusal carries its exact Retry-After (``allow_at - now``).

Semantics, per key with ``rate`` (requests/s) and ``burst`` (requests at once, >= 1):
``T = 1/rate``, ``d = T - burst*T``.  A request at ``now`` is admitted iff
``now >= max(tat, now) + d``; then ``tat = max(tat, now) + T``.  Refused, it returns
``allow_at - now``, and a retry at ``now + retry_after`` is admitted: ``allow_at - now`` is
exact whenever ``now`` and ``allow_at`` lie within a factor of two (Sterbenz), which holds
for an event loop's clock once it is past twice the wait.

Keys resolve to integer handles ahead of time (``handle``/``add_key``); a handle is
``generation << 32 | slot``.  Keys that use the limiter's default limit are forgotten by
``sweep(now)`` once fully refilled (``tat <= now``: their state equals a fresh key's, so
forgetting loses nothing) and their slot is reused; a handle kept past that raises
:class:`StaleHandle` (in ``allow_many`` it yields -1.0), and the caller re-resolves the key.
Keys with their own limit (``add_key``/``set_limit``) are pinned until ``remove``.
Time is always passed in (the event loop's clock), never read here.
"""
from __future__ import annotations

_MASK = 0xFFFFFFFF
_GEN_MOD = 1 << 31
_NEG_INF = float("-inf")


class StaleHandle(KeyError):
    """The handle's key was swept or removed: resolve the key again."""


def _params(rate: float, burst: float) -> tuple[float, float]:
    rate = float(rate)
    burst = float(burst)
    if not (0.0 < rate < float("inf")):
        raise ValueError(f"rate must be positive and finite, got {rate!r}")
    if not (1.0 <= burst < float("inf")):
        raise ValueError(f"burst must be >= 1 and finite, got {burst!r}")
    interval = 1.0 / rate
    return interval, interval - burst * interval


class RateLimiter:
    """GCRA limits for many keys; ``rate``/``burst`` are the defaults for new keys."""

    __slots__ = ("rate", "burst", "_T0", "_d0", "_index", "_keys", "_gen", "_tat", "_T",
                 "_d", "_pinned", "_admitted", "_free", "_cursor")

    def __init__(self, rate: float, burst: float) -> None:
        self._T0, self._d0 = _params(rate, burst)
        self.rate = float(rate)
        self.burst = float(burst)
        self._index: dict = {}
        self._keys: list = []
        self._gen: list[int] = []
        self._tat: list[float] = []
        self._T: list[float] = []
        self._d: list[float] = []
        self._pinned: list[bool] = []
        self._admitted: list[int] = []
        self._free: list[int] = []
        self._cursor = 0

    # -- resolving keys (off the hot path) ---------------------------------------------
    def handle(self, key) -> int:
        """The key's handle, creating the key with the default limit if it is new."""
        h = self._index.get(key)
        if h is None:
            h = self._new(key, self._T0, self._d0, False)
        return h

    def add_key(self, key, rate: float, burst: float) -> int:
        """Create or update ``key`` with its own limit (pinned: never swept)."""
        h = self.handle(key)
        self.set_limit(h, rate, burst)
        return h

    def _new(self, key, interval: float, slack: float, pinned: bool) -> int:
        if self._free:
            s = self._free.pop()
        else:
            s = len(self._gen)
            self._gen.append(0)
            self._keys.append(None)
            self._tat.append(_NEG_INF)
            self._T.append(0.0)
            self._d.append(0.0)
            self._pinned.append(False)
            self._admitted.append(0)
        self._keys[s] = key
        self._tat[s] = _NEG_INF
        self._T[s] = interval
        self._d[s] = slack
        self._pinned[s] = pinned
        self._admitted[s] = 0
        h = (self._gen[s] << 32) | s
        self._index[key] = h
        return h

    def _slot(self, h: int) -> int:
        s = h & _MASK
        if s >= len(self._gen) or self._gen[s] != h >> 32:
            raise StaleHandle(h)
        return s

    def set_limit(self, h: int, rate: float, burst: float) -> None:
        """Change the key's limit and pin it.  Its backlog, in seconds, carries over."""
        s = self._slot(h)
        self._T[s], self._d[s] = _params(rate, burst)
        self._pinned[s] = True

    def limit(self, h: int) -> tuple[float, float]:
        """The key's (rate, burst), as stored (1/T and 1 - d/T, up to rounding)."""
        s = self._slot(h)
        return 1.0 / self._T[s], 1.0 - self._d[s] / self._T[s]

    def key_of(self, h: int):
        return self._keys[self._slot(h)]

    def remove(self, key) -> bool:
        h = self._index.get(key)
        if h is None:
            return False
        self._release(h & _MASK)
        return True

    def _release(self, s: int) -> None:
        del self._index[self._keys[s]]
        self._keys[s] = None
        self._gen[s] = (self._gen[s] + 1) % _GEN_MOD
        self._free.append(s)

    def __len__(self) -> int:
        return len(self._index)

    # -- the hot path ----------------------------------------------------------------------
    def allow(self, h: int, now: float) -> float:
        """0.0 if admitted (and counted), else the exact seconds until it would be."""
        s = h & _MASK
        if s >= len(self._gen) or self._gen[s] != h >> 32:
            raise StaleHandle(h)
        tat = self._tat[s]
        if tat < now:
            tat = now
        at = tat + self._d[s]
        if now < at:
            return at - now
        self._tat[s] = tat + self._T[s]
        self._admitted[s] += 1
        return 0.0

    def allow_many(self, handles, now: float, out) -> int:
        """``allow`` for each handle into ``out`` (-1.0 for a stale one); returns admitted."""
        n = len(handles)
        if len(out) < n:
            raise ValueError("out is shorter than handles")
        gen, tats, ds, Ts, adm = self._gen, self._tat, self._d, self._T, self._admitted
        size = len(gen)
        admitted = 0
        for i in range(n):
            h = handles[i]
            s = h & _MASK
            if s >= size or gen[s] != h >> 32:
                out[i] = -1.0
                continue
            tat = tats[s]
            if tat < now:
                tat = now
            at = tat + ds[s]
            if now < at:
                out[i] = at - now
            else:
                tats[s] = tat + Ts[s]
                adm[s] += 1
                out[i] = 0.0
                admitted += 1
        return admitted

    def peek(self, h: int, now: float) -> float:
        """What ``allow`` would return, without counting anything."""
        s = self._slot(h)
        tat = self._tat[s]
        if tat < now:
            tat = now
        at = tat + self._d[s]
        return at - now if now < at else 0.0

    # -- shared limits and housekeeping -------------------------------------------------
    def charge(self, h: int, now: float, n: float) -> None:
        """Consume ``n`` requests' worth without a decision (admissions made elsewhere)."""
        s = self._slot(h)
        tat = self._tat[s]
        if tat < now:
            tat = now
        self._tat[s] = tat + n * self._T[s]

    def take_admitted(self, h: int) -> int:
        """Requests admitted for the key since the last call; resets the count."""
        s = self._slot(h)
        n = self._admitted[s]
        self._admitted[s] = 0
        return n

    def sweep(self, now: float, limit: int = 0) -> int:
        """Forget unpinned keys that are fully refilled; returns how many were freed.

        Examines ``limit`` slots from where the last sweep stopped (0: all of them), so a
        caller can bound each pause and still cover every slot over successive calls.
        """
        size = len(self._gen)
        if size == 0:
            return 0
        count = size if limit <= 0 or limit > size else limit
        s = self._cursor % size
        freed = 0
        for _ in range(count):
            if self._keys[s] is not None and not self._pinned[s] and self._tat[s] <= now:
                self._release(s)
                freed += 1
            s += 1
            if s == size:
                s = 0
        self._cursor = s
        return freed

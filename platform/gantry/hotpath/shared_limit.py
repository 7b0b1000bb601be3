"""Limits shared by several gateway replicas, reconciled through Redis off the request path.

A Redis round trip per request costs ~130 us (an EVALSHA token bucket, measured on two
cores: docs/architecture.md, "Design decisions"); a local decision ~0.1 us.  So each
replica decides every request on its own :class:`RateLimiter` key and, in the background,
``sync`` reports its new admissions per limit (one script call: INCRBY on a cumulative
counter) and *charges* its local key with what the other replicas admitted since its last
sync (``limiter.charge``): every replica's GCRA consumes, with a lag, all admissions anywhere.

Over-admission bound.  With ``N`` replicas, global rate ``R``, local burst ``b``, sync period
``P`` and lag ``L`` (an admission is charged to every other replica within ``L``; ``L <= 2P``
plus one round trip: reported at the admitting replica's next sync, seen at each other's
next one), once every replica has synced once, admissions ``A`` in any window of length
``W`` satisfy::

    A(W) <= R*W + b + (N - 1) * (b + R*L)

Proof sketch: let ``S`` be the last admission in the window, by replica ``m``.  ``m``'s bucket
(at most ``b`` tokens, refilled at ``R``, never below 0 after an admission) paid for its own
admissions and for every other admission made up to ``S - L``, so those total at most
``b + R*W``; each other replica admitted at most ``b + R*L`` in ``(S - L, S]``.  An ideal
single limiter allows ``R*W + b``; with ``b = B`` the excess is at most
``(N - 1) * (B + R*L)``; with ``local_burst = B/N`` it is ``(N - 1) * R*L`` at the price of a
smaller burst on any one replica.  If Redis is unreachable, replicas keep deciding locally
(each up to the full rate) and report their backlog when it comes back.

Redis keys and the script live in :mod:`gantry.keys` (``shared_limit``,
``SHARED_LIMIT_REPORT``).  One ``sync(now)`` is one iteration; ``run()`` is its poll loop.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .. import keys
from ..cancellation import raise_if_cancelled

log = logging.getLogger(__name__)


@dataclass
class _Shared:
    handle: int
    pending: int = 0  # admissions taken from the limiter but not yet reported
    last_total: int | None = None  # the global counter as of our last report


class SharedLimits:
    """Reconcile the shared limits of one replica's limiter with the other replicas'.

    ``redis`` is a ``redis.asyncio`` client; ``limiter`` the replica's
    :class:`gantry.hotpath.ratelimit.RateLimiter`, on which each shared limit is a pinned key.
    """

    def __init__(self, redis, limiter, *, interval: float = 0.1, ttl: float = 300.0) -> None:
        self._redis = redis
        self._limiter = limiter
        self.interval = float(interval)
        self._ttl_ms = int(ttl * 1000)
        self._limits: dict[str, _Shared] = {}
        self._script = redis.register_script(keys.SHARED_LIMIT_REPORT)

    def add(self, name: str, rate: float, burst: float, local_burst: float | None = None) -> int:
        """Share limit ``name`` (``rate``/s, burst ``burst``) and return its limiter handle.

        ``local_burst`` (default ``burst``) trades single-replica burst for a tighter bound.
        """
        h = self._limiter.add_key(name, rate, burst if local_burst is None else local_burst)
        if name not in self._limits:
            self._limits[name] = _Shared(h)
        return h

    def handle(self, name: str) -> int:
        return self._limits[name].handle

    def remove(self, name: str) -> None:
        self._limits.pop(name, None)
        self._limiter.remove(name)

    async def sync(self, now: float) -> None:
        """Report new admissions of every shared limit and charge the others' locally."""
        if not self._limits:
            return
        names = list(self._limits)
        deltas = []
        for name in names:
            state = self._limits[name]
            state.pending += self._limiter.take_admitted(state.handle)
            deltas.append(state.pending)
        totals = await self._script(keys=[keys.shared_limit(n) for n in names],
                                    args=[self._ttl_ms, *deltas])
        for name, delta, total in zip(names, deltas, totals):
            state = self._limits.get(name)
            if state is None:  # removed while we waited
                continue
            total = int(total)
            state.pending -= delta
            others = 0 if state.last_total is None else total - delta - state.last_total
            state.last_total = total
            if others > 0:  # < 0 only when the counter expired and restarted
                self._limiter.charge(state.handle, now, others)

    async def _iteration(self) -> None:
        await self.sync(asyncio.get_running_loop().time())

    async def run(self) -> None:
        """Poll loop for a background task: one ``_iteration`` every ``interval`` seconds."""
        while True:
            try:
                await self._iteration()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis down: keep deciding locally, report later
                log.warning("shared rate limit sync failed", exc_info=True)
            raise_if_cancelled()
            await asyncio.sleep(self.interval)

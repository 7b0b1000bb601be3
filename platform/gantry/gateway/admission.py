"""Per-principal request admission through the hot-path GCRA rate limiter.

Each principal (today the admin key; later each tenant key) gets a limiter handle once;
the decision per request is one call with the event loop's clock passed in.  Idle keys
are swept in the background so memory stays bounded.  Limits shared across gateway
replicas reconcile through gantry.hotpath.shared_limit, off the request path.
"""
from __future__ import annotations

import math

from ..hotpath.ratelimit import RateLimiter, StaleHandle
from .errors import ApiError

SWEEP_BATCH = 10_000


class Admission:
    def __init__(self, rate: float, burst: float) -> None:
        self.enabled = rate > 0
        self._limiter = RateLimiter(rate, max(1.0, burst)) if self.enabled else None
        self._handles: dict[str, int] = {}

    def check(self, key_id: str, now: float) -> None:
        """Admit one request of ``key_id`` at loop time ``now``, or raise 429 with Retry-After."""
        if not self.enabled:
            return
        handle = self._handles.get(key_id)
        if handle is None:
            handle = self._handles[key_id] = self._limiter.handle(key_id)
        try:
            wait = self._limiter.allow(handle, now)
        except StaleHandle:            # swept while idle: resolve again
            handle = self._handles[key_id] = self._limiter.handle(key_id)
            wait = self._limiter.allow(handle, now)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"rate limit exceeded; retry in {wait:.3f}s",
                           {"Retry-After": str(max(1, math.ceil(wait)))})

    def sweep(self, now: float) -> int:
        """Forget fully refilled keys (their handles turn stale and are re-resolved on use)."""
        if not self.enabled:
            return 0
        freed = self._limiter.sweep(now, SWEEP_BATCH)
        if freed:
            self._handles = {k: h for k, h in self._handles.items() if self._alive(h)}
        return freed

    def _alive(self, handle: int) -> bool:
        try:
            self._limiter.key_of(handle)
            return True
        except (StaleHandle, KeyError):
            return False

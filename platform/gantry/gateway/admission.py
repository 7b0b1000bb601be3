"""Per-principal request admission through the hot-path GCRA rate limiter.

The gateway keeps three: invocations per API key (shared across replicas, below), admin
API calls per key, and failed authentications per client address (both local to one
gateway).  Each principal (today the admin key; later each tenant key) gets a limiter handle once;
the decision per request is one call with the event loop's clock passed in.  Once
:meth:`Admission.share` has given it Redis, a key's limit holds across every gateway
replica: each still decides locally, and gantry.hotpath.shared_limit reconciles the
replicas' admissions in the background (bound on over-admission in that module).  Without
Redis, keys are local and idle ones are swept so memory stays bounded.
"""
from __future__ import annotations

import math

from ..hotpath.ratelimit import RateLimiter, StaleHandle
from ..hotpath.shared_limit import SharedLimits
from .errors import ApiError

SWEEP_BATCH = 10_000


class Admission:
    def __init__(self, rate: float, burst: float, what: str = "rate limit exceeded") -> None:
        self.what = what                # the 429's message, before "; retry in ..."
        self.enabled = rate > 0
        self.rate, self.burst = rate, max(1.0, burst)
        self._limiter = RateLimiter(rate, self.burst) if self.enabled else None
        self._handles: dict[str, int] = {}
        self.shared: SharedLimits | None = None

    def share(self, redis, interval: float = 0.1) -> SharedLimits | None:
        """Share every key's limit with the other replicas through ``redis`` (run the
        returned object's ``run()`` as a background task)."""
        if self.enabled:
            self.shared = SharedLimits(redis, self._limiter, interval=interval)
        return self.shared

    def track(self, key_id: str) -> None:
        """Resolve a known principal's key ahead of its first request, so a shared limit
        counts every replica's admissions from the start."""
        if self.enabled and key_id not in self._handles:
            self._resolve(key_id)

    def _resolve(self, key_id: str) -> int:
        if self.shared is not None:     # pinned in the limiter: never swept, never stale
            handle = self.shared.add(f"key:{key_id}", self.rate, self.burst)
        else:
            handle = self._limiter.handle(key_id)
        self._handles[key_id] = handle
        return handle

    def check(self, key_id: str, now: float) -> None:
        """Admit one request of ``key_id`` at loop time ``now``, or raise 429 with Retry-After."""
        if not self.enabled:
            return
        handle = self._handles.get(key_id)
        if handle is None:
            handle = self._resolve(key_id)
        try:
            wait = self._limiter.allow(handle, now)
        except StaleHandle:            # swept while idle: resolve again
            wait = self._limiter.allow(self._resolve(key_id), now)
        if wait > 0:
            raise self._refusal(wait)

    def hold(self, key_id: str, now: float) -> None:
        """Raise 429 if a request of ``key_id`` would be refused at ``now``, counting nothing
        (a key never checked is never held, and costs no entry)."""
        handle = self._handles.get(key_id) if self.enabled else None
        if handle is None:
            return
        try:
            wait = self._limiter.peek(handle, now)
        except StaleHandle:            # swept: fully refilled
            return
        if wait > 0:
            raise self._refusal(wait)

    def _refusal(self, wait: float) -> ApiError:
        return ApiError(429, "rate_limited", f"{self.what}; retry in {wait:.3f}s",
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

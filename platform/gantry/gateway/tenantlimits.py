"""Per-tenant admission of invocations: requests per minute and concurrent invocations
(docs/tenants.md "Quotas").

The quotas come from a local cache (every tenant's keys.tenant_quota, reloaded every
``refresh`` seconds and at once on a "tenant:ID" hint on keys.EVENTS), never from Redis on
the request path.  Per request:

- ``rpm``: one call of the hot-path GCRA limiter, on a key per tenant shared with the other
  gateways as per-key limits are (gantry.hotpath.shared_limit: decided locally, reconciled
  in the background).  Rate rpm/60 per second; burst one second's worth, at least 10 (the
  whole rpm when that is smaller).  Over it: 429 rate_limited with Retry-After.
- ``concurrency``: one Redis script call (keys.TENANT_SLOT_ACQUIRE) takes a slot, refused at
  the limit (403 quota_exceeded); the slot is released when the invocation ends.  Only
  tenants that have a concurrency quota pay this round trip.  Slots are leases (``lease``
  seconds, renewed every lease/3 while held), so a gateway that dies holds its slots at
  most one lease longer.

A tenant with neither quota costs two dictionary lookups.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from typing import Callable

from aiohttp import web

from ..cancellation import raise_if_cancelled
from ..hotpath.ratelimit import RateLimiter
from ..hotpath.shared_limit import SharedLimits
from ..tenants.quota import QuotaExceeded
from ..tenants.quotastore import QuotaStore
from .appkeys import REDIS, SETTINGS
from .background import run_every
from .errors import ApiError, quota_error

log = logging.getLogger("gantry.gateway")

REFRESH = 2.0          # seconds between reloads of every tenant's quotas
LEASE = 30.0           # seconds a concurrency slot outlives its gateway's last renewal
MIN_BURST = 10.0


def rpm_limit(rpm: int) -> tuple[float, float]:
    """(rate per second, burst) of an rpm quota."""
    rate = rpm / 60.0
    return rate, max(1.0, rate, min(float(rpm), MIN_BURST))


class TenantLimits:
    def __init__(self, redis, *, lease: float = LEASE, refresh: float = REFRESH, sync_interval: float = 0.1,
                 gateway_id: str = "") -> None:
        self.store = QuotaStore(redis)
        self.refresh_interval = refresh
        self.lease_ms = max(1, int(lease * 1000))
        self._limiter = RateLimiter(1.0, 1.0)       # every tenant is a pinned key of its own
        self.shared = SharedLimits(redis, self._limiter, interval=sync_interval)
        self._rpm: dict[str, tuple[int, int]] = {}          # tenant -> (rpm, limiter handle)
        self._concurrency: dict[str, int] = {}              # tenant -> limit
        self._held: dict[str, set[str]] = {}                # tenant -> slots this gateway holds
        self._prefix = f"{gateway_id or os.urandom(6).hex()}:"
        self._ids = itertools.count()
        self._releases: set[asyncio.Task] = set()
        self._wake = asyncio.Event()

    # --- the request path ----------------------------------------------------------------

    async def admit(self, tenant: str, now: float) -> Callable[[], None] | None:
        """Admit one invocation of ``tenant`` at loop time ``now``: raises 429 (rpm) or 403
        quota_exceeded (concurrency); returns the callback that releases its concurrency
        slot (None when the tenant has no concurrency quota)."""
        rpm = self._rpm.get(tenant)
        if rpm is not None:
            # rpm 0 admits nothing (a suspended tenant); the limiter takes only positive rates
            wait = self._limiter.allow(rpm[1], now) if rpm[0] else 60.0
            if wait > 0:
                raise ApiError(429, "rate_limited",
                               f"tenant {tenant} is over its quota of {rpm[0]} requests per minute; "
                               f"retry in {wait:.3f}s",
                               {"Retry-After": str(max(1, math.ceil(wait)))},
                               {"resource": "rpm", "limit": rpm[0]})
        limit = self._concurrency.get(tenant)
        if limit is None:
            return None
        slot = f"{self._prefix}{next(self._ids):x}"
        taken, held = await self.store.acquire_slot(tenant, slot, limit, self.lease_ms)
        if not taken:
            raise quota_error(QuotaExceeded(tenant, "concurrency", held, limit))
        self._held.setdefault(tenant, set()).add(slot)
        return lambda: self._release(tenant, slot)

    def _release(self, tenant: str, slot: str) -> None:
        """Give the slot back off the request path (its lease bounds a lost release)."""
        held = self._held.get(tenant)
        if held is not None:
            held.discard(slot)
        task = asyncio.get_running_loop().create_task(self._release_now(tenant, slot))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release_now(self, tenant: str, slot: str) -> None:
        try:
            await self.store.release_slots(tenant, [slot])
        except Exception as exc:     # Redis away: the lease lapses instead
            log.warning("concurrency slot release failed", extra={"tenant": tenant, "error": repr(exc)})

    # --- background ----------------------------------------------------------------------

    def apply(self, quotas: dict[str, dict[str, int]]) -> None:
        """Take every tenant's stored limits (QuotaStore.all_quotas)."""
        for tenant in [t for t in self._rpm if "rpm" not in quotas.get(t, {})]:
            self.shared.remove(f"tenant:{tenant}")
            del self._rpm[tenant]
        for tenant, limits in quotas.items():
            rpm = limits.get("rpm")
            if rpm is not None and self._rpm.get(tenant, (None,))[0] != rpm:
                if rpm <= 0:
                    self.shared.remove(f"tenant:{tenant}")
                    self._rpm[tenant] = (0, -1)
                    continue
                # add updates a known key's limit in place (its backlog carries over)
                self._rpm[tenant] = (rpm, self.shared.add(f"tenant:{tenant}", *rpm_limit(rpm)))
        self._concurrency = {t: q["concurrency"] for t, q in quotas.items() if "concurrency" in q}

    async def refresh(self) -> None:
        self.apply(await self.store.all_quotas())

    async def renew(self) -> None:
        """Extend the leases of the slots this gateway holds."""
        for tenant, slots in list(self._held.items()):
            if slots:
                await self.store.renew_slots(tenant, list(slots), self.lease_ms)
            else:
                del self._held[tenant]

    def on_event(self, message: str) -> None:
        """A "tenant:ID" hint from the gateway's one keys.EVENTS listener (app._on_event):
        reload the quotas now; the poll covers a lost hint."""
        if message.startswith("tenant:"):
            self._wake.set()

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:       # keep the last quotas; retry next time
                log.warning("tenant quota refresh failed", extra={"error": repr(exc)})
            raise_if_cancelled()
            self._wake.clear()
            try:
                async with asyncio.timeout(self.refresh_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def tasks(self) -> list[asyncio.Task]:
        """The background tasks (the caller cancels them at shutdown)."""
        return [asyncio.create_task(self._refresh_loop(), name="gantry-tenant-quotas"),
                asyncio.create_task(self.shared.run(), name="gantry-tenant-rpm"),
                asyncio.create_task(run_every(self.lease_ms / 3000, self.renew, "concurrency slot renewal"),
                                    name="gantry-tenant-slots")]

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)


TENANT_LIMITS = web.AppKey("tenant_limits", TenantLimits)


async def tenant_limits_ctx(app: web.Application):
    """cleanup_ctx: the gateway's TenantLimits and its background tasks (after _redis_ctx)."""
    limits = app[TENANT_LIMITS] = TenantLimits(app[REDIS], gateway_id=app[SETTINGS].gateway_id)
    try:
        await limits.refresh()
    except Exception as exc:        # the refresh loop retries
        log.warning("cannot read tenant quotas yet", extra={"error": repr(exc)})
    tasks = limits.tasks()
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await limits.close()

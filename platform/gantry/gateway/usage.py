"""Usage metering in the gateway and the usage API.

Metering costs the request path no Redis round trip: ``invoke`` tells the app's ``Meter`` how
each call ended (one dict update, made by its one recording call,
gateway.metrics.Metrics.finished), and ``UsageFlusher`` adds what gathered to the tenants' day
buckets every GANTRY_USAGE_FLUSH_INTERVAL (5 s) and once more at shutdown, in one script
(keys.USAGE_ADD).  A flush that fails puts its counts back, so a Redis outage delays them
and loses nothing unless the gateway stops before Redis returns.

What counts (gantry.usage.model): a request of a deployed function admitted past the key's
rate limit is an invocation, whatever its outcome; one answered >= 500 is also an error; a
429 of the rate limit is a throttle (under the requested name, as it is refused before the
function is looked up), never an invocation; a 404 for a name that is not deployed counts
nowhere.  Duration is the gateway's wall time of the invocation (a stream: to its end).
"""
from __future__ import annotations

import time

from aiohttp import web

from ..manifest import NAME_RE
from ..usage import model
from ..usage.model import DURATION, ERRORS, INVOCATIONS, THROTTLES, UsageError
from ..usage.store import UsageStore
from . import audit
from .appkeys import METRICS, PRINCIPAL, REDIS, SETTINGS
from .background import flushing
from .auth import acting_tenant, require, visible_tenant
from .errors import ApiError

# Throttled calls name any function they like, deployed or not: past this many rows between
# two flushes, their throttles gather under OTHER (no function name starts with "_"), so a
# flood of made-up names costs bounded memory here and bounded fields in Redis.
MAX_ROWS = 10_000
OTHER = "_other"


class Meter:
    """Counts per (tenant, bare function name) since the last flush: [invocations, errors,
    throttles, duration seconds]."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[float]] = {}

    def observe(self, tenant: str, name: str, found: bool, status: int, seconds: float) -> None:
        """One finished invoke request: of function NAME (as requested) of TENANT; FOUND: the
        function was deployed; STATUS: the answer's (499 when the client went away)."""
        if status == 429:
            if NAME_RE.match(name):    # any other name would have been 404: nothing to charge
                if (tenant, name) not in self.counts and len(self.counts) >= MAX_ROWS:
                    name = OTHER
                self._row(tenant, name)[2] += 1
        elif found:
            row = self._row(tenant, name)
            row[0] += 1
            if status >= 500:
                row[1] += 1
            row[3] += seconds

    def _row(self, tenant: str, name: str) -> list[float]:
        row = self.counts.get((tenant, name))
        if row is None:
            row = self.counts[(tenant, name)] = [0, 0, 0, 0.0]
        return row

    def take(self) -> dict[tuple[str, str], list[float]]:
        taken, self.counts = self.counts, {}
        return taken

    def put_back(self, taken: dict[tuple[str, str], list[float]]) -> None:
        for key, row in taken.items():
            mine = self._row(*key)
            for i, value in enumerate(row):
                mine[i] += value


def _as_counters(taken: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], dict[str, float]]:
    return {key: {INVOCATIONS: row[0], ERRORS: row[1], THROTTLES: row[2], DURATION: row[3]}
            for key, row in taken.items()}


class UsageFlusher:
    def __init__(self, meter: Meter, store: UsageStore, clock=time.time) -> None:
        self.meter, self.store, self.clock = meter, store, clock

    async def _iteration(self) -> None:
        """Write what gathered since the last flush to today's buckets; on failure keep it."""
        taken = self.meter.take()
        if not taken:
            return
        try:
            await self.store.add(_as_counters(taken), model.day_of(self.clock()))
        except BaseException:
            self.meter.put_back(taken)
            raise


METER = web.AppKey("usage_meter", Meter)
FLUSHER = web.AppKey("usage_flusher", UsageFlusher)


async def usage_ctx(app: web.Application):
    """The meter (the app's Metrics records into it: gateway.metrics.Metrics.finished) and its
    flush loop, which flushes a last time at shutdown (before Redis is closed: this context is
    set up after, so torn down before, the Redis client's)."""
    meter = app[METER] = app[METRICS].meter
    flusher = app[FLUSHER] = UsageFlusher(meter, UsageStore(app[REDIS]))
    async with flushing(flusher._iteration, app[SETTINGS].usage_flush_interval, "usage",
                        lambda: {"functions": len(meter.counts)}):
        yield


# --- the API -----------------------------------------------------------------------------

async def _report(request: web.Request, tenant: str) -> web.Response:
    now = time.time()
    try:
        days = model.day_range(request.query.get("since") or None, request.query.get("until") or None, now)
    except UsageError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    store = UsageStore(request.app[REDIS])
    functions, totals = model.aggregate(await store.buckets(tenant, days))
    month = model.month_days(now)
    month_totals = totals if days == month else model.aggregate(await store.buckets(tenant, month))[1]
    prices = request.app[SETTINGS].prices
    to_date = model.cost(month_totals, prices)
    return web.json_response({
        "tenant": tenant, "since": days[0], "until": days[-1], "functions": functions, "totals": totals,
        "cost": {"currency": prices.currency, "prices": prices.to_dict(),
                 "period": round(model.cost(totals, prices), 6), "month_to_date": round(to_date, 6),
                 "monthly_estimate": round(model.estimate(to_date, now), 6)}})


async def tenant_usage(request: web.Request) -> web.Response:
    """GET /v1/tenants/{id}/usage: a tenant key reads its own tenant only (another id is 404,
    as if it did not exist); the platform admin any (a removed tenant's too, until it expires)."""
    principal = request[PRINCIPAL]
    require(principal, "usage")
    return await _report(request, visible_tenant(principal, request.match_info["id"]))


async def own_usage(request: web.Request) -> web.Response:
    """GET /v1/usage: the caller's tenant (the platform admin may name one with ?tenant=)."""
    principal = request[PRINCIPAL]
    require(principal, "usage")
    return await _report(request, acting_tenant(request, principal))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/usage", own_usage)
    app.router.add_get("/v1/tenants/{id}/usage", tenant_usage)
    app.router.add_get("/v1/audit", audit.list_audit)

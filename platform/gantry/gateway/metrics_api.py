"""The metrics API: ``GET /v1/functions/{name}/metrics`` and ``GET /v1/tenants/{id}/metrics``,
the per-minute rows (gantry.metrics) over ``?range=`` (default 1h, at most the retention) at
``?step=`` (default: at most 360 points).  Reads are scoped like the other reads: a function
as its ``read`` scope names it (gateway.auth.function_name), a tenant only by its own keys or
the platform admin's."""
from __future__ import annotations

import time

from aiohttp import web

from ..metrics import model
from ..metrics.store import MetricsStore
from ..tenants.model import split
from .appkeys import CACHE, PRINCIPAL, REDIS, SETTINGS
from .auth import function_name, require, visible_tenant
from .errors import ApiError


async def _report(request: web.Request, kind: str, scope: str) -> dict:
    settings = request.app[SETTINGS]
    try:
        minutes = model.parse_range(request.query.get("range"), settings.metrics_retention)
        step = model.parse_step(request.query.get("step"), minutes)
    except model.MetricsError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    first, end = model.window(time.time(), minutes, step)
    hashes = await MetricsStore(request.app[REDIS]).hours(kind, scope, model.hours(first, end))
    return {"range": minutes * 60, "retention": settings.metrics_retention,
            "recording": settings.metrics, **model.report(hashes, first, end, step)}


async def function_metrics(request: web.Request) -> web.Response:
    shown = request.match_info["name"]
    name = function_name(request[PRINCIPAL], shown, "read")
    if await request.app[CACHE].get(name) is None:
        raise ApiError(404, "not_found", f"no function named {shown!r} is deployed")
    tenant, _ = split(name)
    return web.json_response({"name": shown, "tenant": tenant, **await _report(request, "function", name)})


async def tenant_metrics(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "read")
    tenant = visible_tenant(principal, request.match_info["id"])
    return web.json_response({"tenant": tenant, **await _report(request, "tenant", tenant)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/functions/{name}/metrics", function_metrics)
    app.router.add_get("/v1/tenants/{id}/metrics", tenant_metrics)

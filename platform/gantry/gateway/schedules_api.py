"""GET /v1/schedules (`gantry schedules ls`): every [[schedules]] entry of the active version of
each function the caller may see, with its next tick and what the scheduler last fired
(docs/async.md).  Read-only: the scheduler leader alone writes schedule records."""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..manifest import Schedule
from ..scheduler.schedules import Record, iso, next_tick
from ..scheduler.schedulestore import ScheduleStore, active_spec
from ..store import UnreadableRecord
from ..tenants.model import split
from .appkeys import PRINCIPAL, STORE
from .auth import function_name, require, tenant_filter
from .errors import ApiError


def _entry(shown: str, tenant: str, schedule: Schedule, record: Record, now: float) -> dict[str, Any]:
    upcoming = next_tick(schedule, now)
    return {"function": shown, "tenant": tenant, "name": schedule.name, "cron": schedule.cron,
            "timezone": schedule.timezone, "priority": schedule.priority,
            "next": iso(upcoming, schedule.timezone), "next_unix": upcoming,
            "last_fired": iso(record.fired, schedule.timezone), "last_fired_unix": record.fired,
            "last_invocation": record.invocation or None, "missed": record.missed}


async def list_schedules(request: web.Request) -> web.Response:
    """The caller's tenant's schedules (the platform admin's: every tenant's, or one with
    ?tenant=ID); ?function=NAME: that function's only (404 if there is none)."""
    principal = request[PRINCIPAL]
    require(principal, "read")
    store = request.app[STORE]
    only = tenant_filter(request, principal)
    asked = request.query.get("function")
    if asked is not None:
        names = [function_name(principal, asked, "read")]
    else:
        names = [n for n in await store.function_names()
                 if (only is None or split(n)[0] == only)
                 and not (principal.functions and split(n)[1] not in principal.functions)]
    records = ScheduleStore(store.redis)
    now = time.time()
    out: list[dict[str, Any]] = []
    for name in names:
        tenant, bare = split(name)
        if only is not None and tenant != only:
            continue
        try:
            spec = await active_spec(store, name)
        except UnreadableRecord:
            continue                    # GET /v1/functions shows why; its schedules are unknown
        if spec is None:
            if asked is not None:
                raise ApiError(404, "not_found", f"no function named {asked[:80]!r}")
            continue
        found = await records.records((name, s.name) for s in spec.schedules)
        shown = name if principal.is_admin else bare
        out += [_entry(shown, tenant, s, r, now) for s, r in zip(spec.schedules, found)]
    return web.json_response({"schedules": out})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/schedules", list_schedules)

"""The audit stream of admin actions: ``record`` after an action succeeded, ``GET /v1/audit``.

An entry says who (the key id, never a key), when, in which tenant, what (``function.deploy``,
``function.delete``, ``function.scale``, ``function.scaling``, ``key.create``, ``key.revoke``, ``tenant.create``,
``tenant.update``, ``tenant.remove``, ``secret.set``, ``secret.remove``, ``callback_secret.read``)
and to what.  The action has happened by the time it is recorded, so a failure to record it
(Redis gone for a moment) is logged and never turns the caller's success into an error.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from ..usage.store import AuditStore
from .appkeys import PRINCIPAL, REDIS
from .auth import require, visible_tenant
from .paging import page

log = logging.getLogger("gantry.gateway")

RECORD_TIMEOUT = 2.0      # seconds an audit write may hold up the answer of a done action
MAX_AUDIT_ENTRIES = 1000  # per GET /v1/audit


async def record(request: web.Request, action: str, target: str, tenant: str | None = None,
                 **detail: Any) -> str | None:
    """Append an audit entry for ACTION on TARGET by the request's principal, in TENANT (the
    principal's own by default).  Returns the entry's id, or None if it could not be written
    (logged with everything it would have said)."""
    principal = request[PRINCIPAL]
    entry = dict(time_=time.time(), actor=principal.key_id, tenant=tenant or principal.tenant,
                 action=action, target=target, detail=detail)
    try:
        async with asyncio.timeout(RECORD_TIMEOUT):
            return await AuditStore(request.app[REDIS]).append(**entry)
    except Exception as exc:       # the action is done: say so in the log, never fail it now
        log.warning("audit entry not written", extra={"error": repr(exc), "action": action, "target": target,
                                                      "actor": principal.key_id, "tenant": entry["tenant"]})
        return None


async def list_audit(request: web.Request) -> web.Response:
    """GET /v1/audit?tenant=&after=&limit=: the platform admin sees every tenant's entries
    (or one tenant's with ?tenant=); any other key only its own tenant's."""
    principal = request[PRINCIPAL]
    require(principal, "audit")
    asked = request.query.get("tenant") or None       # empty: not asked
    if asked is not None:
        tenant = visible_tenant(principal, asked)
    else:
        tenant = None if principal.is_admin else principal.tenant
    after, limit = page(request, MAX_AUDIT_ENTRIES)
    entries, cursor = await AuditStore(request.app[REDIS]).read(tenant, after, limit)
    return web.json_response({"entries": entries, "cursor": cursor})

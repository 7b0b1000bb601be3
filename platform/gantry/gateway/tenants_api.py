"""The tenants and API keys API: ``/v1/tenants``, ``/v1/keys``, ``/v1/whoami`` (docs/tenants.md).

Tenants are the platform admin's; a tenant's own keys see their tenant (``GET``) and nothing
else, and another tenant is a 404.  Keys are made per tenant: the platform admin makes any;
a tenant-admin key makes keys of its own tenant up to its own scope.  A new key is answered
once, whole; afterwards only its id and prefix are ever shown.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from ..manifest import NAME_RE
from ..tenants.apikeys import MAX_KEY_FUNCTIONS, MAX_NOTE, ApiKey, new_key, parse_scope, parse_ttl
from ..tenants.model import DEFAULT_TENANT, Scope, TenantError, tenant_from_request
from ..settings import hash_key
from ..tenants.quotastore import QuotaStore
from . import audit
from .admin import _json_object
from .appkeys import PRINCIPAL, TENANTS
from .auth import Principal, acting_tenant, require, tenant_filter, visible_tenant
from .errors import ApiError

# Which scopes a key of each scope may hand out (never more than its own).
GRANTABLE = {Scope.ADMIN: frozenset(Scope), Scope.TENANT_ADMIN: frozenset({Scope.TENANT_ADMIN, Scope.DEPLOY, Scope.INVOKE})}


def _bad(exc: TenantError) -> ApiError:
    return ApiError(400, "bad_request", str(exc))


def _tenant_id(request: web.Request, principal: Principal) -> str:
    return visible_tenant(principal, request.match_info["id"])


async def _tenant_view(request: web.Request, tenant_id: str) -> dict[str, Any]:
    store = request.app[TENANTS]
    found = await store.get_tenant(tenant_id)
    if found is None:
        raise ApiError(404, "not_found", f"no tenant {tenant_id!r}")
    view = found.to_dict()
    view["functions"] = len(await store.tenant_functions(tenant_id))
    used = await QuotaStore(store.redis).usage(tenant_id)     # in the units quotas are given in
    used["cpu"] = used.get("cpu", 0) / 1000
    view["usage"] = used
    return view


async def whoami(request: web.Request) -> web.Response:
    p = request[PRINCIPAL]
    require(p, "invoke")
    return web.json_response({"tenant": p.tenant, "scope": str(p.scope), "key_id": p.key_id,
                              "functions": list(p.functions) or None})


async def create_tenant(request: web.Request) -> web.Response:
    require(request[PRINCIPAL], "tenants")
    data = await _json_object(request)
    try:
        tenant = tenant_from_request(data)
    except TenantError as exc:
        raise _bad(exc) from None
    if tenant.id == DEFAULT_TENANT:
        raise ApiError(409, "conflict", "the default tenant always exists: change it with PATCH /v1/tenants/default")
    tenant = dataclasses.replace(tenant, created=time.time())
    if not await request.app[TENANTS].put_tenant(tenant, create=True):
        raise ApiError(409, "conflict", f"tenant {tenant.id!r} exists")
    view = await _tenant_view(request, tenant.id)
    await audit.record(request, "tenant.create", tenant.id, tenant=tenant.id, isolation=view["isolation"],
                       quotas=view["quotas"])
    return web.json_response(view, status=201)


async def list_tenants(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "read")
    ids = await request.app[TENANTS].tenant_ids() if principal.is_admin else [principal.tenant]
    return web.json_response({"tenants": [await _tenant_view(request, t) for t in ids]})


async def get_tenant(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "read")
    return web.json_response(await _tenant_view(request, _tenant_id(request, principal)))


async def update_tenant(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "tenants")
    tenant_id = _tenant_id(request, principal)
    data = await _json_object(request)
    store = request.app[TENANTS]
    base = await store.get_tenant(tenant_id)
    if base is None:
        raise ApiError(404, "not_found", f"no tenant {tenant_id!r}")
    try:
        tenant = tenant_from_request(data, base)
    except TenantError as exc:
        raise _bad(exc) from None
    if not await store.put_tenant(tenant, create=False):
        raise ApiError(404, "not_found", f"no tenant {tenant_id!r}")
    view = await _tenant_view(request, tenant_id)
    await audit.record(request, "tenant.update", tenant_id, tenant=tenant_id, changed=sorted(data),
                       isolation=view["isolation"], quotas=view["quotas"])
    return web.json_response(view)


async def remove_tenant(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "tenants")
    tenant_id = _tenant_id(request, principal)
    if tenant_id == DEFAULT_TENANT:
        raise ApiError(409, "conflict", "the default tenant cannot be removed")
    store = request.app[TENANTS]
    if await store.get_tenant(tenant_id) is None:
        raise ApiError(404, "not_found", f"no tenant {tenant_id!r}")
    functions = await store.tenant_functions(tenant_id)
    if functions:
        raise ApiError(409, "conflict", f"tenant {tenant_id!r} still has {len(functions)} function(s): "
                                        "delete them first")
    removed = await store.remove_tenant(tenant_id)
    await audit.record(request, "tenant.remove", tenant_id, tenant=tenant_id, keys_removed=len(removed))
    return web.json_response({"id": tenant_id, "removed": True, "keys_removed": len(removed)})


def _key_functions(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if (not isinstance(value, list) or len(value) > MAX_KEY_FUNCTIONS
            or not all(isinstance(n, str) and NAME_RE.match(n) for n in value)):
        raise ApiError(400, "bad_request", f"functions: expected a list of at most {MAX_KEY_FUNCTIONS} "
                                           "function names (bare, of the key's tenant), or null for all")
    return tuple(sorted(set(value)))


async def create_key(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "keys")
    tenant_id = acting_tenant(request, principal)
    data = await _json_object(request)
    unknown = sorted(set(data) - {"scope", "functions", "ttl", "note", "tenant"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; expected scope, functions, ttl, note")
    if "tenant" in data:      # the body may name it too (the query's ?tenant= wins if both)
        asked = data["tenant"]
        if not isinstance(asked, str):
            raise ApiError(400, "bad_request", "tenant: expected a tenant id")
        if "tenant" not in request.query and asked != tenant_id:
            if not principal.is_admin:
                raise ApiError(404, "not_found", f"no tenant {asked[:40]!r}")
            tenant_id = asked
    try:
        scope = parse_scope(data.get("scope", Scope.INVOKE))
        ttl = parse_ttl(data.get("ttl"))
    except TenantError as exc:
        raise _bad(exc) from None
    if scope not in GRANTABLE.get(principal.scope, frozenset()):
        raise ApiError(403, "forbidden", f"a {principal.scope} key cannot make {scope} keys")
    if scope == Scope.ADMIN and tenant_id != DEFAULT_TENANT:
        raise ApiError(400, "bad_request", "scope: admin keys are platform-wide: make them without a tenant")
    note = data.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ApiError(400, "bad_request", f"note: expected text of at most {MAX_NOTE} characters")
    if await request.app[TENANTS].get_tenant(tenant_id) is None:
        raise ApiError(404, "not_found", f"no tenant {tenant_id!r}")
    key_id, key = new_key()
    now = time.time()
    record = ApiKey(id=key_id, tenant=tenant_id, scope=scope, hash=hash_key(key),
                    functions=_key_functions(data.get("functions")), created=now,
                    expires=now + ttl if ttl else 0.0, created_by=principal.key_id, note=note)
    await request.app[TENANTS].add_key(record)
    await audit.record(request, "key.create", key_id, tenant=tenant_id, scope=str(scope),
                       functions=list(record.functions) or None, expires=record.expires or None)
    return web.json_response({**record.to_dict(), "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "keys")
    only = tenant_filter(request, principal)
    found = await request.app[TENANTS].list_keys(only)
    now = time.time()
    return web.json_response({"keys": [{**k.to_dict(), "live": k.live(now)} for k in found]})


async def revoke_key(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    require(principal, "keys")
    key_id = request.match_info["id"]
    store = request.app[TENANTS]
    found = await store.get_key(key_id) if len(key_id) == 12 and key_id.isalnum() else None
    if found is None or (not principal.is_admin and found.tenant != principal.tenant):
        raise ApiError(404, "not_found", f"no key {key_id[:40]!r}")
    if found.scope == Scope.ADMIN and not principal.is_admin:
        raise ApiError(403, "forbidden", "only the platform admin revokes admin keys")
    revoked = await store.revoke_key(key_id)
    if revoked:
        await audit.record(request, "key.revoke", key_id, tenant=found.tenant)
    return web.json_response({"id": key_id, "revoked": True, "already": not revoked})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_post("/v1/tenants", create_tenant)
    app.router.add_get("/v1/tenants", list_tenants)
    app.router.add_get("/v1/tenants/{id}", get_tenant)
    app.router.add_patch("/v1/tenants/{id}", update_tenant)
    app.router.add_delete("/v1/tenants/{id}", remove_tenant)
    app.router.add_post("/v1/keys", create_key)
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_delete("/v1/keys/{id}", revoke_key)

"""The secrets API: ``PUT /v1/secrets/{name}``, ``GET /v1/secrets``, ``DELETE /v1/secrets/{name}``
(docs/tenants.md, "Secrets").  Every call acts in the caller's tenant (``acting_tenant``)
and needs the ``secrets`` action.  Values go in, sealed here under the master key
(GANTRY_SECRETS_KEY_FILE / GANTRY_SECRETS_KEY), and never come out: no answer, log line or
error message of this module carries one."""
from __future__ import annotations

import json
import logging

from aiohttp import web

from ..store import Store, UnreadableRecord
from ..tenants.model import split
from ..tenants.secretbox import MAX_VALUE_BYTES, KEY_ENV, KEY_FILE_ENV, MasterKey, SecretError, check_name, \
    check_value, from_env
from ..tenants.secretstore import SecretLimit, SecretStore
from ..tenants.store import TenantStore
from . import audit
from .appkeys import PRINCIPAL, REDIS, STORE
from .auth import acting_tenant, require
from .errors import ApiError

log = logging.getLogger("gantry.gateway")

SECRET_STORE = web.AppKey("secret_store", SecretStore)
# The master key, or None: then secrets cannot be set (503), but listed and removed.
MASTER_KEY = web.AppKey("secrets_master_key", object)
# A PUT body: the value (at most MAX_VALUE_BYTES of UTF-8) JSON-escaped, at most 6 bytes a
# byte ("\u0000"-style), plus the object around it.
MAX_PUT_BODY = 6 * MAX_VALUE_BYTES + 1024


async def missing_secrets(store: SecretStore, tenant: str, secrets: dict[str, str]) -> list[str]:
    """The secret names a spec's ``[secrets]`` (variable -> name) refers to that TENANT does
    not hold, sorted; [] when all are there.  The deploy refuses a spec with any (400)."""
    return await store.missing(tenant, list(secrets.values()))


def missing_secrets_error(tenant: str, missing: list[str]) -> ApiError:
    return ApiError(400, "bad_request", f"secrets: tenant {tenant!r} has no secret named "
                    f"{', '.join(repr(n) for n in missing)}; set it first (gantry secrets set NAME)")


def _secret_name(request: web.Request) -> str:
    try:
        return check_name(request.match_info["name"])
    except SecretError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def _context(request: web.Request) -> tuple[SecretStore, str]:
    principal = request[PRINCIPAL]
    require(principal, "secrets")
    return request.app[SECRET_STORE], acting_tenant(request, principal)


async def _value(request: web.Request) -> bytes:
    """The body's ``value`` as UTF-8 bytes; 400 naming the field otherwise.  Never echoes it."""
    if request.content_length is not None and request.content_length > MAX_PUT_BODY:
        raise ApiError(413, "too_large", f"value: over the limit of {MAX_VALUE_BYTES} bytes (64 KiB)")
    raw = await request.read()       # bounded by the app's client_max_size: 413 beyond
    if len(raw) > MAX_PUT_BODY:
        raise ApiError(413, "too_large", f"value: over the limit of {MAX_VALUE_BYTES} bytes (64 KiB)")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, "bad_request", 'the body must be a JSON object {"value": "..."}') from None
    if not isinstance(data, dict) or set(data) != {"value"}:
        raise ApiError(400, "bad_request", 'the body must be a JSON object with one field, "value" (a string)')
    value = data["value"]
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", f"value: expected a string, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "bad_request", "value: expected valid UTF-8 text (it held a lone surrogate)") from None
    try:
        return check_value(encoded)
    except SecretError as exc:
        raise ApiError(413 if len(encoded) > MAX_VALUE_BYTES else 400,
                       "too_large" if len(encoded) > MAX_VALUE_BYTES else "bad_request", str(exc)) from None


async def put_secret(request: web.Request) -> web.Response:
    store, tenant = _context(request)
    name = _secret_name(request)
    key = request.app[MASTER_KEY]
    if key is None:
        raise ApiError(503, "secrets_unavailable", f"this gateway has no secrets master key: set {KEY_FILE_ENV} "
                       f"(a 0600 file holding 32 bytes in base64) or {KEY_ENV}; gantry up makes one",
                       {"Retry-After": "60"})     # an operator's fix, not a moment's wait
    value = await _value(request)
    assert isinstance(key, MasterKey)
    try:
        created = await store.put(tenant, name, key.seal(tenant, name, value))
    except SecretLimit as exc:
        raise ApiError(409, "too_many_secrets", str(exc)) from None
    log.info("secret set", extra={"tenant": tenant, "secret": name, "key_id": request[PRINCIPAL].key_id,
                                  "new": created})
    await audit.record(request, "secret.set", name, tenant=tenant, created=created)
    return web.json_response({"name": name, "tenant": tenant, "created": created}, status=201 if created else 200)


async def list_secrets(request: web.Request) -> web.Response:
    store, tenant = _context(request)
    secrets = await store.list(tenant)
    used = await _references(request.app[STORE], request.app[TENANTS], tenant)
    return web.json_response({"tenant": tenant, "secrets": [
        {"name": s.name, "created": s.created, "updated": s.updated, "functions": sorted(used.get(s.name, ()))}
        for s in secrets]})


async def delete_secret(request: web.Request) -> web.Response:
    store, tenant = _context(request)
    name = _secret_name(request)
    if not await store.delete(tenant, name):
        raise ApiError(404, "not_found", f"tenant {tenant!r} has no secret named {name!r}")
    log.info("secret removed", extra={"tenant": tenant, "secret": name, "key_id": request[PRINCIPAL].key_id})
    await audit.record(request, "secret.remove", name, tenant=tenant)
    return web.json_response({"name": name, "tenant": tenant, "deleted": True})


async def _references(store: Store, tenants: TenantStore, tenant: str) -> dict[str, set[str]]:
    """secret name -> the tenant's functions (bare names) whose latest or active version
    names it.  A running instance of an older version may still hold a removed secret's value."""
    out: dict[str, set[str]] = {}
    for qualified in await tenants.tenant_functions(tenant):
        try:
            fn = await store.get_function(qualified)
            if fn is None:
                continue
            specs = [fn.spec]
            if fn.active != fn.latest:
                found = await store.get_version(qualified, fn.active)
                if found is not None:
                    specs.append(found[1])
        except UnreadableRecord:
            continue
        for spec in specs:
            for secret in spec.secrets.values():
                out.setdefault(secret, set()).add(split(qualified)[1])
    return out


TENANTS = web.AppKey("secrets_tenant_store", TenantStore)


async def _ctx(app: web.Application):
    # After the gateway's own Redis context (create_app lists it first).
    app[SECRET_STORE] = SecretStore(app[REDIS])
    app[TENANTS] = TenantStore(app[REDIS])
    try:
        app[MASTER_KEY] = from_env()
    except SecretError as exc:       # set but unusable: stop at start, with the cause
        raise RuntimeError(f"secrets master key: {exc}") from None
    yield


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_ctx)
    app.router.add_put("/v1/secrets/{name}", put_secret)
    app.router.add_get("/v1/secrets", list_secrets)
    app.router.add_delete("/v1/secrets/{name}", delete_secret)

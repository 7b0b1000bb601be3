"""The admin API (JSON): deploy, list, get, delete and scale functions, change their scaling
policy; function logs; nodes."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

from aiohttp import web

from .. import keys, logview
from ..manifest import MAX_DURATION, FunctionSpec, ManifestError, Scaling
from ..scheduler import gpulease
from ..scheduler.placement import Request
from ..quantities import parse_duration
from ..scheduler.decisions import DecisionStore
from ..store import UnreadableRecord
from ..tenants.model import DEFAULT_TENANT, split
from ..tenants.quotastore import QuotaStore
from . import audit, registry, secrets_api
from .appkeys import CACHE, PRINCIPAL, STORE, TENANTS
from .auth import Principal, acting_tenant, function_name, require, tenant_filter
from .errors import ApiError
from .paging import page, whole_number

MAX_LOG_ENTRIES = 1000
MAX_JSON_DEPTH = 32          # the deepest admin body (spec -> section -> field) is 3 levels
MAX_JSON_INT = 2**63 - 1     # what Redis, msgpack and the scheduler's arithmetic can hold


def _store(request: web.Request, action: str):
    require(request[PRINCIPAL], action)
    return request.app[STORE]


def _shown_name(principal: Principal, qualified: str) -> str:
    """A function's name as the caller addresses it: qualified for the platform admin, bare
    for a tenant's key (which sees its own tenant only)."""
    return qualified if principal.is_admin else split(qualified)[1]


def _summary_for(principal: Principal, summary: dict[str, Any]) -> dict[str, Any]:
    summary["tenant"], _ = split(summary["name"])
    summary["name"] = _shown_name(principal, summary["name"])
    return summary


def _json_int(text: str) -> int:
    if len(text) > 20 or abs(value := int(text)) > MAX_JSON_INT:
        raise ValueError(f"the number {text[:24]}{'...' if len(text) > 24 else ''} is out of range "
                         f"(whole numbers up to 2**63-1)")
    return value


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:24]} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number (JSON has no NaN or Infinity)")


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (a scalar is 0), iteratively."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in children)
    return deepest


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object whose numbers are finite and fit in 64 bits and whose nesting
    is shallow: anything else is 400, decided here so that no handler meets NaN, 2**70 or a
    RecursionError.  JSON is UTF-8 (RFC 8259): a charset in Content-Type is not consulted."""
    raw = await request.read()       # bounded by the app's client_max_size: 413 beyond
    try:
        data = json.loads(raw, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except RecursionError:
        raise ApiError(400, "bad_request", f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:        # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "bad_request", f"the body must be a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    if _depth(data) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_request", f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return data


def _name(request: web.Request, action: str) -> str:
    """The qualified name of the function the path names (auth.function_name)."""
    return function_name(request[PRINCIPAL], request.match_info["name"], action)


def _not_found(request: web.Request) -> ApiError:
    return ApiError(404, "not_found", f"no function named {request.match_info['name'][:80]!r} is deployed")


async def _register(request: web.Request, r, spec: FunctionSpec, image: str) -> tuple[int, int]:
    """Register SPEC with IMAGE as the function's next version, as every deploy does (its
    secrets must exist; the functions quota; the rollout follows): (version, active version)."""
    missing = await secrets_api.missing_secrets(request.app[secrets_api.SECRET_STORE], spec.tenant, spec.secrets)
    if missing:
        raise secrets_api.missing_secrets_error(spec.tenant, missing)
    if spec.resources.wants_gpu:
        # refused now rather than left waiting for a GPU no live node has (docs/gpus.md)
        why = gpulease.why_none_holds({n.id: n.gpu_devices for n in await r.live_nodes()},
                                      Request.of(spec.resources).gpu)
        if why:
            raise ApiError(400, "bad_request", f"spec: resources: {why}")
    version, active = await registry.deploy(r, spec, image)
    request.app[CACHE].refresh_name(spec.qualified)
    return version, active


async def deploy(request: web.Request) -> web.Response:
    r = _store(request, "deploy")
    principal = request[PRINCIPAL]
    tenant = acting_tenant(request, principal)
    data = await _json_object(request)
    unknown = sorted(set(data) - {"spec", "image"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; expected spec and image")
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ApiError(400, "bad_request", "image: expected the function's image reference (a non-empty string)")
    spec_data = data.get("spec")
    if isinstance(spec_data, dict) and spec_data.get("tenant", tenant) != tenant:
        raise ApiError(400, "bad_request", f"spec: tenant: the deploying key's ({tenant!r}; the platform admin "
                                           f"chooses with ?tenant=ID), got {str(spec_data['tenant'])[:40]!r}")
    try:
        spec = FunctionSpec.from_dict(spec_data, source="spec")
    except ManifestError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if principal.functions and spec.name not in principal.functions:
        raise ApiError(403, "forbidden", f"this key is limited to the functions {', '.join(principal.functions)}")
    if tenant != DEFAULT_TENANT and await request.app[TENANTS].get_tenant(tenant) is None:
        raise ApiError(404, "not_found", f"no tenant {tenant!r}")
    spec = dataclasses.replace(spec, tenant=tenant)
    version, active = await _register(request, r, spec, image.strip())
    await audit.record(request, "function.deploy", spec.name, tenant=tenant, version=version, image=image.strip())
    return web.json_response({"name": _shown_name(principal, spec.qualified), "tenant": tenant,
                              "version": version, "active": active}, status=201)


async def list_functions(request: web.Request) -> web.Response:
    """The caller's tenant's functions; the platform admin's: every tenant's, or one
    tenant's with ?tenant=ID."""
    r = _store(request, "read")
    principal = request[PRINCIPAL]
    only = tenant_filter(request, principal)
    out = []
    for name in await registry.function_names(r):
        if only is not None and split(name)[0] != only:
            continue
        if principal.functions and split(name)[1] not in principal.functions:
            continue
        found = await registry.function_summary(r, name)
        if found is not None:
            summary, _ = found
            summary.pop("spec")
            summary.pop("active_spec")
            out.append(_summary_for(principal, summary))
    return web.json_response({"functions": out})


async def get_function(request: web.Request) -> web.Response:
    r = _store(request, "read")
    name = _name(request, "read")
    found = await registry.function_summary(r, name)
    if found is None:
        raise _not_found(request)
    summary, instances = found
    _summary_for(request[PRINCIPAL], summary)
    summary["instances"] = [
        {"id": i.id, "version": i.version, "node": i.node, "state": i.state,
         "address": f"{i.host}:{i.port}" if i.host else None, "reason": i.reason or None,
         "created": i.created}
        for i in sorted(instances, key=lambda i: (i.created, i.id))]
    return web.json_response(summary)


async def delete_function(request: web.Request) -> web.Response:
    r = _store(request, "deploy")
    name = _name(request, "deploy")
    if not await registry.delete(r, name):
        raise _not_found(request)
    request.app[CACHE].refresh_name(name)
    await audit.record(request, "function.delete", split(name)[1], tenant=split(name)[0])
    return web.json_response({"name": request.match_info["name"], "deleted": True})


async def scale(request: web.Request) -> web.Response:
    r = _store(request, "deploy")
    name = _name(request, "deploy")
    data = await _json_object(request)
    n = data.get("min_instances")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ApiError(400, "bad_request", f"min_instances: expected a whole number >= 0, got {json.dumps(n)}")
    found = await registry.function_summary(r, name)
    if found is None:
        raise _not_found(request)
    summary, _ = found
    top = summary["spec"]["scaling"]["max_instances"]
    if n > top:
        raise ApiError(400, "bad_request", f"min_instances: expected at most max_instances ({top}), got {n}")
    await QuotaStore(r.redis).check_min_instances(name, n)     # 403 quota_exceeded above the quota
    if not await registry.set_min_override(r, name, n):
        raise _not_found(request)
    await audit.record(request, "function.scale", split(name)[1], tenant=split(name)[0], min_instances=n)
    return web.json_response({"name": request.match_info["name"], "min_instances": n})


SCALING_FIELDS = tuple(f.name for f in dataclasses.fields(Scaling))


async def configure_scaling(request: web.Request) -> web.Response:
    """PATCH /v1/functions/NAME/scaling: any of the manifest's [scaling] fields, applied to the
    latest version's spec and registered, with its image, as a new version (a deploy without
    a build: docs/control-plane.md "Scaling").  A patch that changes nothing makes no version."""
    r = _store(request, "deploy")
    name = _name(request, "deploy")
    data = await _json_object(request)
    unknown = sorted(set(data) - set(SCALING_FIELDS))
    if unknown:
        raise ApiError(400, "bad_request",
                       f"unknown field {unknown[0][:40]!r}; expected any of {', '.join(SCALING_FIELDS)}")
    if not data:
        raise ApiError(400, "bad_request", f"expected at least one of {', '.join(SCALING_FIELDS)}")
    try:
        fn = await r.get_function(name)
    except UnreadableRecord as exc:
        raise ApiError(409, "conflict", f"the function's record cannot be read ({exc}): deploy it again") from None
    if fn is None:
        raise _not_found(request)
    current = fn.spec.to_dict()
    try:   # the whole spec again, so every rule of the manifest (min <= max ...) applies
        spec = FunctionSpec.from_dict({**current, "scaling": {**current["scaling"], **data}}, source="spec")
    except ManifestError as exc:
        raise ApiError(400, "bad_request", f"{exc.field}: {exc.message}") from None
    shown = request.match_info["name"]
    if spec == fn.spec:
        return web.json_response({"name": shown, "version": fn.latest, "active": fn.active, "changed": False,
                                  "scaling": current["scaling"]})
    if spec.scaling.min_instances > fn.spec.scaling.min_instances:
        await QuotaStore(r.redis).check_min_instances(name, spec.scaling.min_instances)   # 403 above the quota
    version, active = await _register(request, r, spec, fn.image)
    changed = {k: v for k, v in spec.to_dict()["scaling"].items() if current["scaling"][k] != v}
    await audit.record(request, "function.scaling", spec.name, tenant=spec.tenant, version=version, **changed)
    return web.json_response({"name": shown, "version": version, "active": active, "changed": True,
                              "scaling": spec.to_dict()["scaling"]})


DEFAULT_WARM_FOR = "10m"


async def warm(request: web.Request) -> web.Response:
    """Hold at least N instances ready until the time passes (N 0: end the hold).  The
    scheduler reads the record's warm and warm_until (docs/control-plane.md "Scaling")."""
    r = _store(request, "deploy")
    name = _name(request, "deploy")
    data = await _json_object(request)
    unknown = sorted(set(data) - {"instances", "for"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; expected instances and for")
    n = data.get("instances")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ApiError(400, "bad_request", f"instances: expected a whole number >= 0, got {json.dumps(n)[:40]}")
    try:
        seconds = parse_duration(data.get("for", DEFAULT_WARM_FOR), most=MAX_DURATION)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"for: {exc}") from None
    if seconds <= 0 and n > 0:
        raise ApiError(400, "bad_request", "for: expected a duration above zero")
    found = await registry.function_summary(r, name)
    if found is None:
        raise _not_found(request)
    top = (found[0]["spec"] or {}).get("scaling", {}).get("max_instances")
    if top is not None and n > top:
        raise ApiError(400, "bad_request", f"instances: expected at most max_instances ({top}), got {n}")
    await QuotaStore(r.redis).check_min_instances(name, n)     # held like min_instances: its quota
    until = round(time.time() + seconds, 3) if n > 0 else 0.0
    if not await registry.set_warm(r, name, n, until):
        raise _not_found(request)
    await audit.record(request, "function.warm", split(name)[1], tenant=split(name)[0], instances=n, until=until)
    return web.json_response({"name": request.match_info["name"], "instances": n, "until": until or None})


async def function_decisions(request: web.Request) -> web.Response:
    """The scheduler's last scaling decisions for the function, newest first."""
    r = _store(request, "read")
    name = _name(request, "read")
    limit = whole_number(request, "limit", keys.MAX_DECISIONS, keys.MAX_DECISIONS)
    if not await r.function_fields(name):
        raise _not_found(request)
    return web.json_response({"name": request.match_info["name"],
                              "decisions": await DecisionStore(r.redis).last(name, limit)})


def _log_query(request: web.Request) -> registry.LogQuery:
    """The filters of GET /v1/functions/NAME/logs: since, instance, level, tail (docs/api.md)."""
    after, limit = page(request, MAX_LOG_ENTRIES, "a log cursor")
    query = request.query
    try:
        since = query.get("since")
        since_ms = None if not since else max(0, int(logview.parse_since(since, time.time()) * 1000))
        level = logview.level_name(query["level"]) if query.get("level") else None
    except logview.LogQueryError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    tail = whole_number(request, "tail", MAX_LOG_ENTRIES, MAX_LOG_ENTRIES) if query.get("tail") else None
    instance = query.get("instance") or None
    if instance is not None and len(instance) > 200:
        raise ApiError(400, "bad_request", "instance: expected an instance id or a prefix of one")
    return registry.LogQuery(after=after, limit=limit, since_ms=since_ms, instance=instance, level=level, tail=tail)


async def function_logs(request: web.Request) -> web.Response:
    r = _store(request, "read")
    name = _name(request, "read")
    entries, cursor, more = await registry.logs(r, name, _log_query(request))
    return web.json_response({"name": request.match_info["name"], "entries": entries, "cursor": cursor,
                              "more": more})


async def list_nodes(request: web.Request) -> web.Response:
    r = _store(request, "nodes")
    return web.json_response({"nodes": await registry.nodes(r)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/functions", deploy)
    app.router.add_get("/v1/functions", list_functions)
    app.router.add_get("/v1/functions/{name}", get_function)
    app.router.add_delete("/v1/functions/{name}", delete_function)
    app.router.add_post("/v1/functions/{name}/scale", scale)
    app.router.add_get("/v1/functions/{name}/logs", function_logs)
    app.router.add_get("/v1/nodes", list_nodes)
    app.router.add_post("/v1/functions/{name}/warm", warm)
    app.router.add_get("/v1/functions/{name}/decisions", function_decisions)
    app.router.add_patch("/v1/functions/{name}/scaling", configure_scaling)

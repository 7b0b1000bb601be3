"""The admin API (JSON): deploy, list, get, delete and scale functions; function logs; nodes."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..manifest import NAME_RE, FunctionSpec, ManifestError
from . import registry
from .appkeys import CACHE, PRINCIPAL, STORE
from .auth import require_admin
from .errors import ApiError

MAX_LOG_ENTRIES = 1000


def _admin(request: web.Request):
    require_admin(request[PRINCIPAL])
    return request.app[STORE]


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", f"the body must be a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise ApiError(404, "not_found", f"no function named {name!r}")
    return name


def _not_found(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no function named {name!r} is deployed")


async def deploy(request: web.Request) -> web.Response:
    r = _admin(request)
    data = await _json_object(request)
    unknown = sorted(set(data) - {"spec", "image"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; expected spec and image")
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ApiError(400, "bad_request", "image: expected the function's image reference (a non-empty string)")
    try:
        spec = FunctionSpec.from_dict(data.get("spec"), source="spec")
    except ManifestError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    version, active = await registry.deploy(r, spec, image.strip())
    request.app[CACHE].refresh_name(spec.name)
    return web.json_response({"name": spec.name, "version": version, "active": active}, status=201)


async def list_functions(request: web.Request) -> web.Response:
    r = _admin(request)
    out = []
    for name in await registry.function_names(r):
        found = await registry.function_summary(r, name)
        if found is not None:
            summary, _ = found
            summary.pop("spec")
            summary.pop("active_spec")
            out.append(summary)
    return web.json_response({"functions": out})


async def get_function(request: web.Request) -> web.Response:
    r = _admin(request)
    name = _name(request)
    found = await registry.function_summary(r, name)
    if found is None:
        raise _not_found(name)
    summary, instances = found
    summary["instances"] = [
        {"id": i.id, "version": i.version, "node": i.node, "state": i.state,
         "address": f"{i.host}:{i.port}" if i.host else None, "reason": i.reason or None,
         "created": i.created}
        for i in sorted(instances, key=lambda i: (i.created, i.id))]
    return web.json_response(summary)


async def delete_function(request: web.Request) -> web.Response:
    r = _admin(request)
    name = _name(request)
    if not await registry.delete(r, name):
        raise _not_found(name)
    request.app[CACHE].refresh_name(name)
    return web.json_response({"name": name, "deleted": True})


async def scale(request: web.Request) -> web.Response:
    r = _admin(request)
    name = _name(request)
    data = await _json_object(request)
    n = data.get("min_instances")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ApiError(400, "bad_request", f"min_instances: expected a whole number >= 0, got {json.dumps(n)}")
    found = await registry.function_summary(r, name)
    if found is None:
        raise _not_found(name)
    summary, _ = found
    top = summary["spec"]["scaling"]["max_instances"]
    if n > top:
        raise ApiError(400, "bad_request", f"min_instances: expected at most max_instances ({top}), got {n}")
    if not await registry.set_min_override(r, name, n):
        raise _not_found(name)
    return web.json_response({"name": name, "min_instances": n})


async def function_logs(request: web.Request) -> web.Response:
    r = _admin(request)
    name = _name(request)
    after = request.query.get("after") or None
    if after is not None and not _stream_id(after):
        raise ApiError(400, "bad_request", f"after: expected a log cursor such as 1700000000000-0, got {after!r}")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "bad_request", "limit: expected a whole number") from None
    if not 1 <= limit <= MAX_LOG_ENTRIES:
        raise ApiError(400, "bad_request", f"limit: expected 1 to {MAX_LOG_ENTRIES}, got {limit}")
    entries, cursor = await registry.logs(r, name, after, limit)
    return web.json_response({"name": name, "entries": entries, "cursor": cursor})


def _stream_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit()) and len(value) <= 41


async def list_nodes(request: web.Request) -> web.Response:
    r = _admin(request)
    return web.json_response({"nodes": await registry.nodes(r)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/functions", deploy)
    app.router.add_get("/v1/functions", list_functions)
    app.router.add_get("/v1/functions/{name}", get_function)
    app.router.add_delete("/v1/functions/{name}", delete_function)
    app.router.add_post("/v1/functions/{name}/scale", scale)
    app.router.add_get("/v1/functions/{name}/logs", function_logs)
    app.router.add_get("/v1/nodes", list_nodes)

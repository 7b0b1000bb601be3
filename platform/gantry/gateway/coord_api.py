"""The /v1/coord API: locks with fencing tokens, state with a watched revision log, queues
and service discovery for functions, over gantry.coord.store (docs/coordination.md).

Every name lives in the caller's namespace: its tenant's (two tenants never see each other's
names); a function instance's coordination token maps to its function's tenant, so a tenant's
functions and its API keys share one namespace.  The default tenant's namespace is "admin"
(what it was before tenants existed, so its coordination data survives the upgrade).  The token is verified here, on every call, against the
instance record (gantry_runtime.coord.token_matches; a verdict is kept for TOKEN_CACHE s),
so it is good exactly while its instance exists and runs.

Waits are long polls bounded by MAX_WAIT: a lock waiter is woken by the release that puts it
at the head of the queue (or looks again when the lease would end), a consumer by a put (or
every QUEUE_POLL s, for redeliveries), a watcher by XREAD BLOCK on the log.  An answer with
nothing in it (not acquired, no item, no events) is normal; the client asks again.

The API has a Redis connection pool of its own (CONNECTIONS, waiting for a free connection
rather than failing), so long polls never take the connections invocations need; a blocking
wait holds one of at most BLOCKING_WAITS of them, and a waiter beyond that polls instead.
"""
from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from gantry_runtime.coord import CoordCode, token_matches

from ..coord.store import CoordStore
from ..hotpath.router import Router
from ..state import DRAINING, RUNNING_STATES
from ..settings import redis_options
from ..tenants.model import DEFAULT_TENANT, split
from .appkeys import AUTH, PRINCIPAL, SETTINGS, STORE
from .auth import ADMIN, COORD
from .errors import ApiError

MAX_WAIT = 30.0            # seconds a long poll may wait at most
MAX_NAME = 256             # characters of a lock, key, queue or service name
MAX_TTL = 3600.0           # seconds of a lease or a registration at most
QUEUE_POLL = 0.25          # seconds between looks at a queue a consumer waits on (redeliveries)
MAX_EVENTS = 1000          # changes in one watch answer at most
TOKEN_CACHE = 5.0          # seconds a verified coordination token is trusted without a look
MAX_DELIVERIES = 1000
MAX_VISIBILITY = 12 * 3600.0  # seconds a delivery stays out, or a nack delays an item, at most
MAX_LIST = 10_000          # keys in one state listing at most
MAX_WEIGHT = 1 << 20       # a service instance's weight at most
MAX_QUEUE_NAME = MAX_NAME - 5  # room for the dead-letter queue's ".dead"
CONNECTIONS = 256          # the coordination API's own Redis connections
BLOCKING_WAITS = 192       # of which long polls may hold at most this many at once

COORD_STORE = web.AppKey("coord_store", CoordStore)
TOKENS = web.AppKey("coord_tokens", dict)                  # token -> (namespace, monotonic expiry)
WAITS = web.AppKey("coord_waits", asyncio.Semaphore)
ROUTERS = web.AppKey("coord_routers", dict)                # (ns, service) -> (Router, {instance: (slot, weight)})
_TOKEN_STATES = frozenset(RUNNING_STATES | {DRAINING})


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_coord_ctx)
    r = app.router
    r.add_post("/v1/coord/lock/acquire", lock_acquire)
    r.add_post("/v1/coord/lock/renew", lock_renew)
    r.add_post("/v1/coord/lock/release", lock_release)
    r.add_get("/v1/coord/lock", lock_info)
    r.add_get("/v1/coord/state", state_list)
    r.add_get("/v1/coord/state/{key:.+}", state_get)
    r.add_put("/v1/coord/state/{key:.+}", state_set)
    r.add_delete("/v1/coord/state/{key:.+}", state_delete)
    r.add_post("/v1/coord/incr/{key:.+}", state_incr)
    r.add_get("/v1/coord/watch", watch)
    r.add_post("/v1/coord/queue/put", queue_put)
    r.add_post("/v1/coord/queue/get", queue_get)
    r.add_post("/v1/coord/queue/ack", queue_ack)
    r.add_post("/v1/coord/queue/nack", queue_nack)
    r.add_get("/v1/coord/queue", queue_depth)
    r.add_post("/v1/coord/service/register", service_register)
    r.add_post("/v1/coord/service/heartbeat", service_heartbeat)
    r.add_post("/v1/coord/service/deregister", service_deregister)
    r.add_get("/v1/coord/service", service_list)
    r.add_get("/v1/coord/service/pick", service_pick)


async def _coord_ctx(app: web.Application):
    pool = aioredis.BlockingConnectionPool.from_url(app[SETTINGS].redis_url, max_connections=CONNECTIONS,
                                                    timeout=5, **redis_options())
    client = aioredis.Redis(connection_pool=pool)
    app[COORD_STORE] = CoordStore(client)
    app[TOKENS] = {}
    app[ROUTERS] = {}
    app[WAITS] = asyncio.Semaphore(BLOCKING_WAITS)
    yield
    await client.aclose()
    await pool.disconnect()


async def _blocking(request: web.Request, wait, seconds: float) -> None:
    """Run a blocking wait (a coroutine function of the seconds to block) if a slot is free,
    else sleep a little: the caller looks again either way."""
    waits = request.app[WAITS]
    if waits.locked():
        await asyncio.sleep(min(seconds, 0.05))
        return
    async with waits:
        await wait(seconds)


# -- request helpers ------------------------------------------------------------------------

def _json(text: str, status: int = 200) -> web.Response:
    return web.Response(body=text.encode(), status=status, content_type="application/json")


def _answer(data: dict) -> web.Response:
    return _json(json.dumps(data, separators=(",", ":")))


def _conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def tenant_namespace(tenant: str) -> str:
    return ADMIN.key_id if tenant == DEFAULT_TENANT else f"t-{tenant}"


async def _namespace(request: web.Request) -> str:
    """The caller's namespace; a function's token is verified here first."""
    principal = request[PRINCIPAL]
    if principal.kind != COORD:
        return tenant_namespace(principal.tenant)
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    tokens = request.app[TOKENS]
    now = time.monotonic()
    known = tokens.get(token)
    if known is not None and known[1] > now:
        return known[0]
    instance_id = principal.key_id.removeprefix("coord:")
    inst = await request.app[STORE].get_instance(instance_id)
    if inst is None or inst.state not in _TOKEN_STATES or not token_matches(token, inst.id, inst.key):
        request.app[AUTH].failures.check(request.remote or "", asyncio.get_running_loop().time())
        raise ApiError(401, "unauthorized", "invalid or expired coordination token", {"WWW-Authenticate": "Bearer"})
    if len(tokens) > 10_000:
        tokens.clear()
    ns = tenant_namespace(split(inst.function)[0])      # the function's owner
    tokens[token] = (ns, now + TOKEN_CACHE)
    return ns


async def _body(request: web.Request) -> dict:
    try:     # the bytes as they came (json.loads reads UTF-8): no text decoding step of their own
        data = json.loads(await request.read()) if request.can_read_body else {}
    except ValueError as exc:
        raise _bad(f"invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object")
    return data


def _name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise _bad(f"{what} must be 1 to {MAX_NAME} printable characters, got {str(value)[:40]!r}")
    return value


def _number(data: dict, field: str, default: float, lo: float, hi: float) -> float:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi or math.isnan(value):
        raise _bad(f"{field} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _integer(data: dict, field: str, default: int | None, lo: int, hi: int) -> int | None:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(f"{field} must be a whole number from {lo} to {hi}, got {value!r}")
    return value


def _query_number(request: web.Request, field: str, default: float, lo: float, hi: float) -> float:
    raw = request.query.get(field)
    try:
        value = default if raw is None or raw == "" else float(raw)
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:
        raise _bad(f"{field} must be a number from {lo:g} to {hi:g}, got {raw!r}")
    return value


def _fence(data: dict) -> tuple[str, int] | None:
    fence = data.get("fence")
    if fence is None:
        return None
    if not isinstance(fence, dict):
        raise _bad('fence must be {"lock": NAME, "token": N}')
    return _name(fence.get("lock"), "fence.lock"), _integer(fence, "token", 0, 1, 2**62)


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise _bad(f"value: {exc}") from None


def _stale(fence: tuple[str, int]) -> ApiError:
    return _conflict(CoordCode.FENCE_STALE, f"lock {fence[0]!r} is no longer held with token {fence[1]}: "
                                            "a newer holder may have written; stop")


# -- locks ----------------------------------------------------------------------------------

def _holder(data: dict) -> str:
    return _name(data.get("holder"), "holder")


async def lock_acquire(request: web.Request) -> web.Response:
    """{name, holder, ttl (s), wait (s; 0: try once)} -> {acquired, token}.  A waiter keeps its
    place in line while it asks; one that gives up leaves the line."""
    ns = await _namespace(request)
    data = await _body(request)
    name, holder = _name(data.get("name")), _holder(data)
    ttl_ms = int(_number(data, "ttl", 10.0, 0.05, MAX_TTL) * 1000)
    wait = _number(data, "wait", 0.0, 0.0, MAX_WAIT)
    store = request.app[COORD_STORE]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    granted = False
    try:
        while True:
            grant = await store.lock_acquire(ns, name, holder, ttl_ms, wait > 0)
            if grant.token:
                granted = True
                return _json(f'{{"acquired":true,"token":{grant.token},"holder":{json.dumps(holder)}}}')
            left = deadline - loop.time()
            if left <= 0:
                return _json('{"acquired":false,"token":0}')
            # woken by the release that makes us head of the line; else look again when the
            # lease would end (a holder that died), or soon when it is free but another's turn
            nap = grant.pttl / 1000 + 0.002 if grant.pttl > 0 else 0.05
            await _blocking(request, lambda t: store.lock_wait(ns, name, holder, t), min(left, nap, 1.0))
    finally:
        if wait > 0 and not granted:
            try:
                await store.lock_leave(ns, name, holder)
            except Exception:   # the keep-alive drops the waiter anyway
                pass


async def lock_renew(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    data = await _body(request)
    name, holder = _name(data.get("name")), _holder(data)
    token = _integer(data, "token", 0, 1, 2**62)
    ttl_ms = int(_number(data, "ttl", 10.0, 0.05, MAX_TTL) * 1000)
    if not await request.app[COORD_STORE].lock_renew(ns, name, holder, token, ttl_ms):
        raise _conflict(CoordCode.LOCK_LOST, f"lock {name!r} is no longer held with token {token}")
    return _json('{"renewed":true}')


async def lock_release(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    data = await _body(request)
    name, holder = _name(data.get("name")), _holder(data)
    token = _integer(data, "token", 0, 1, 2**62)
    released = await request.app[COORD_STORE].lock_release(ns, name, holder, token)
    return _json('{"released":true}' if released else '{"released":false}')


async def lock_info(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    name = _name(request.query.get("name"))
    info = await request.app[COORD_STORE].lock_info(ns, name)
    if info is None:
        return _json('{"held":false,"holder":null,"token":0}')
    holder, token, pttl = info
    return _answer({"held": True, "holder": holder, "token": token, "ttl": pttl / 1000})


# -- state ----------------------------------------------------------------------------------

def _key(request: web.Request) -> str:
    key = _name(request.match_info["key"], "key")
    if key.startswith("@"):
        raise _bad("keys starting with '@' are reserved (lock events in the log)")
    return key


async def state_get(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    key = _key(request)
    found = await request.app[COORD_STORE].state_get(ns, key)
    if found is None:
        raise ApiError(404, "not_found", f"no state {key!r}")
    value, rev = found
    return _json(f'{{"key":{json.dumps(key)},"value":{value},"revision":{rev}}}')


async def _write(request: web.Request, op: str, value: str, data: dict) -> web.Response:
    ns = await _namespace(request)
    key = _key(request)
    fence = _fence(data)
    expect = _integer(data, "expect_revision", None, 0, 2**62)
    written = await request.app[COORD_STORE].state_write(ns, key, op, value, expect, fence)
    if written.status == 1:
        return _json(f'{{"key":{json.dumps(key)},"value":{written.value or "null"},"revision":{written.revision}}}')
    if written.status == -1:
        raise _stale(fence)
    if written.status == -2:
        raise _conflict(CoordCode.VERSION_MISMATCH,
                        f"{key!r} is at revision {written.revision}, not {expect}: read it again")
    if written.status == -3:
        raise _conflict(CoordCode.NOT_AN_INTEGER, f"{key!r} does not hold an integer")
    raise ApiError(404, "not_found", f"no state {key!r}")


async def state_set(request: web.Request) -> web.Response:
    """{value, expect_revision?, fence?} -> {key, value, revision}."""
    data = await _body(request)
    if "value" not in data:
        raise _bad("value is required")
    return await _write(request, "set", _dump(data["value"]), data)


async def state_delete(request: web.Request) -> web.Response:
    data = await _body(request)
    return await _write(request, "del", "", data)


async def state_incr(request: web.Request) -> web.Response:
    data = await _body(request)
    delta = _integer(data, "delta", 1, -2**53, 2**53)
    return await _write(request, "incr", str(delta), data)


async def state_list(request: web.Request) -> web.Response:
    """?prefix=&limit= -> {items: [{key, value, revision}], revision}: one consistent read."""
    ns = await _namespace(request)
    prefix = request.query.get("prefix", "")
    limit = int(_query_number(request, "limit", 1000, 1, MAX_LIST))
    rev, items = await request.app[COORD_STORE].state_list(ns, prefix, limit)
    parts = [f'{{"key":{json.dumps(k)},"value":{v},"revision":{r}}}' for k, v, r in items]
    return _json(f'{{"items":[{",".join(parts)}],"revision":{rev}}}')


def _event(change) -> str:
    if change.op in ("grant", "release"):
        value = json.dumps(change.value)
    else:
        value = change.value or "null"
    return (f'{{"revision":{change.revision},"key":{json.dumps(change.key)},"op":"{change.op}",'
            f'"value":{value},"token":{change.token}}}')


async def watch(request: web.Request) -> web.Response:
    """?prefix=&after=REV&timeout=S -> {events: [...], revision}: the changes under the prefix
    with revisions above ``after``, in order, waiting up to ``timeout`` s for the first; ask
    next from ``revision``.  410 revision_compacted when the log no longer reaches back."""
    ns = await _namespace(request)
    prefix = request.query.get("prefix", "")
    after = int(_query_number(request, "after", 0, 0, 2**53))
    timeout = _query_number(request, "timeout", 0.0, 0.0, MAX_WAIT)
    store = request.app[COORD_STORE]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[str] = []
    changes = await store.changes(ns, after, MAX_EVENTS)
    while True:
        if changes and changes[0].revision != after + 1:
            raise _compacted(after, changes[0].revision)
        if not changes:
            # nothing after it: either nothing happened, or the log no longer reaches back
            # (a change landing between these reads is simply read on the next round)
            oldest, latest = await store.oldest_revision(ns), await store.revision(ns)
            if oldest > after + 1 or (oldest == 0 and latest > after):
                raise _compacted(after, oldest)
            if latest < after:
                raise ApiError(410, CoordCode.REVISION_COMPACTED,
                               f"revision {after} is ahead of the namespace ({latest}): its state was reset; "
                               "read it again and watch from the revision of that read")
        for change in changes:
            if change.key.startswith(prefix):
                found.append(_event(change))
        if changes:
            after = changes[-1].revision
        left = deadline - loop.time()
        if found or left <= 0 or len(changes) >= MAX_EVENTS:
            break
        if request.app[WAITS].locked():
            await asyncio.sleep(min(left, 0.05))
            changes = await store.changes(ns, after, MAX_EVENTS)
        else:
            async with request.app[WAITS]:
                changes = await store.changes(ns, after, MAX_EVENTS, block_ms=max(1, int(left * 1000)))
        if not changes and deadline - loop.time() <= 0:
            break
    return _json(f'{{"events":[{",".join(found)}],"revision":{after}}}')


def _compacted(after: int, oldest: int) -> ApiError:
    return ApiError(410, CoordCode.REVISION_COMPACTED,
                    f"revision {after} is compacted (the log starts at {oldest}): read the state again "
                    "and watch from the revision of that read")


# -- queues ---------------------------------------------------------------------------------

def _queue(data: dict) -> str:
    name = _name(data.get("name"), "queue name")
    if len(name) > MAX_QUEUE_NAME:
        raise _bad(f"queue name must be at most {MAX_QUEUE_NAME} characters")
    return name


async def queue_put(request: web.Request) -> web.Response:
    """{name, value, priority 0..9} -> {id}."""
    ns = await _namespace(request)
    data = await _body(request)
    name = _queue(data)
    if "value" not in data:
        raise _bad("value is required")
    priority = _integer(data, "priority", 0, 0, 9)
    item = await request.app[COORD_STORE].queue_put(ns, name, _dump(data["value"]), priority)
    return _json(f'{{"id":{item}}}')


async def queue_get(request: web.Request) -> web.Response:
    """{name, timeout, visibility, max_deliveries} -> {item: {id, value, delivery} | null}."""
    ns = await _namespace(request)
    data = await _body(request)
    name = _queue(data)
    timeout = _number(data, "timeout", 0.0, 0.0, MAX_WAIT)
    visibility_ms = int(_number(data, "visibility", 30.0, 0.01, MAX_VISIBILITY) * 1000)
    most = _integer(data, "max_deliveries", 5, 0, MAX_DELIVERIES)
    store = request.app[COORD_STORE]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        item = await store.queue_get(ns, name, name + ".dead", visibility_ms, most)
        if item is not None:
            return _json(f'{{"item":{{"id":{item.id},"value":{item.value},"delivery":{item.delivery},'
                         f'"deadline_ms":{item.deadline_ms}}}}}')
        left = deadline - loop.time()
        if left <= 0:
            return _json('{"item":null}')
        await _blocking(request, lambda t: store.queue_wait(ns, name, t), min(left, QUEUE_POLL))


async def _settle(request: web.Request, ack: bool) -> web.Response:
    ns = await _namespace(request)
    data = await _body(request)
    name = _queue(data)
    item = _integer(data, "id", 0, 1, 2**62)
    delivery = _integer(data, "delivery", 0, 1, 2**62)
    fence = _fence(data) if ack else None
    delay_ms = int(_number(data, "delay", 0.0, 0.0, MAX_VISIBILITY) * 1000)
    done = await request.app[COORD_STORE].queue_settle(ns, name, item, delivery, ack, fence, delay_ms)
    if done == -1:
        raise _stale(fence)
    if done == 0:
        raise _conflict(CoordCode.RECEIPT_STALE, f"item {item} of {name!r} is no longer out with delivery "
                                                 f"{delivery}: it was delivered again or settled")
    return _json('{"ok":true}')


async def queue_ack(request: web.Request) -> web.Response:
    """{name, id, delivery, fence?}: done with the item."""
    return await _settle(request, True)


async def queue_nack(request: web.Request) -> web.Response:
    """{name, id, delivery, delay}: deliver the item again after ``delay`` s."""
    return await _settle(request, False)


async def queue_depth(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    name = _name(request.query.get("name"), "queue name")
    ready, inflight = await request.app[COORD_STORE].queue_depth(ns, name)
    return _json(f'{{"ready":{ready},"inflight":{inflight}}}')


# -- services -------------------------------------------------------------------------------

async def service_register(request: web.Request) -> web.Response:
    """{name, instance, address, port, metadata, weight, ttl}."""
    ns = await _namespace(request)
    data = await _body(request)
    name, instance = _name(data.get("name"), "service name"), _name(data.get("instance"), "instance")
    address = _name(data.get("address"), "address")
    port = _integer(data, "port", None, 1, 65535)
    if port is None:
        raise _bad("port is required")
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _bad("metadata must be an object")
    weight = _integer(data, "weight", 1, 0, MAX_WEIGHT)
    ttl_ms = int(_number(data, "ttl", 10.0, 0.1, MAX_TTL) * 1000)
    info = _dump({"address": address, "port": port, "metadata": metadata, "weight": weight})
    await request.app[COORD_STORE].service_put(ns, name, instance, ttl_ms, info)
    return _json('{"ok":true}')


async def service_heartbeat(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    data = await _body(request)
    name, instance = _name(data.get("name"), "service name"), _name(data.get("instance"), "instance")
    ttl_ms = int(_number(data, "ttl", 10.0, 0.1, MAX_TTL) * 1000)
    if not await request.app[COORD_STORE].service_put(ns, name, instance, ttl_ms):
        raise ApiError(404, "not_found", f"{instance!r} of {name!r} is not registered (expired?): register again")
    return _json('{"ok":true}')


async def service_deregister(request: web.Request) -> web.Response:
    ns = await _namespace(request)
    data = await _body(request)
    name, instance = _name(data.get("name"), "service name"), _name(data.get("instance"), "instance")
    removed = await request.app[COORD_STORE].service_delete(ns, name, instance)
    return _json('{"removed":true}' if removed else '{"removed":false}')


async def _instances(request: web.Request) -> tuple[str, str, list[dict]]:
    ns = await _namespace(request)
    name = _name(request.query.get("name"), "service name")
    live = await request.app[COORD_STORE].service_list(ns, name)
    return ns, name, [{"id": i, **json.loads(info), "expires_ms": expiry} for i, info, expiry in live]


async def service_list(request: web.Request) -> web.Response:
    _, _, instances = await _instances(request)
    return _answer({"instances": instances})


async def service_pick(request: web.Request) -> web.Response:
    """One live instance, chosen by gantry.hotpath.router.Router (smooth weighted round-robin,
    one router per service kept in this gateway, brought up to date with each pick)."""
    ns, name, instances = await _instances(request)
    routers = request.app[ROUTERS]
    router, slots = routers.get((ns, name)) or (None, {})
    if router is None:
        if len(routers) > 10_000:
            routers.clear()
        router = Router(seed=secrets.randbits(32))
        routers[(ns, name)] = (router, slots)
    live = {i["id"]: i for i in instances}
    for gone in [i for i in slots if i not in live]:
        router.remove(slots.pop(gone)[0])
    for inst_id, inst in live.items():
        weight = int(inst.get("weight", 1))
        known = slots.get(inst_id)
        if known is None:
            slots[inst_id] = (router.add(inst_id, weight, 1 << 20, True), weight)
        elif known[1] != weight:       # set_weight restarts the slot's round: only on a change
            router.set_weight(known[0], weight)
            slots[inst_id] = (known[0], weight)
    slot = router.pick()
    if slot < 0:
        raise ApiError(404, "not_found", f"no healthy instance of {name!r}")
    return _answer({"instance": live[router.instance(slot)]})

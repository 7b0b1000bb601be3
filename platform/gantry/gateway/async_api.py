"""Async invocations over HTTP: submit (``POST /v1/invoke/{name}/async``), read, wait for and
cancel one (``/v1/invocations/{id}``), and the dead-letter view (``/v1/dlq``).  An
``Idempotency-Key`` on a sync invoke comes here too (``idempotent_invoke``): it runs as an
async invocation that the caller waits for, so a repeat gets the stored result, never a
second run.  docs/async.md describes it all for users."""
from __future__ import annotations

import asyncio
import re
import time
import uuid

from aiohttp import web
from gantry_runtime import wire

from .appkeys import ADMISSION, CACHE, INVOCATIONS, PRINCIPAL, SETTINGS
from .auth import Principal, function_name, require, tenant_filter
from .dispatch import DISPATCHER
from .errors import ApiError
from .paging import whole_number
from .invoke import IDEMPOTENCY_KEY, _asked_timeout, body_limit, read_body
from ..invocations.model import PRIORITIES, SETTLED, Invocation, State, view
from ..invocations.store import InvocationStore
from ..tenants.model import split

PRIORITY = "X-Gantry-Priority"
CALLBACK_URL = "X-Callback-Url"
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_IDEM_RE = re.compile(r"^[\x21-\x7e]{1,255}$")      # printable ASCII, no spaces
_STARTED = SETTLED | {State.RUNNING}
MAX_WAIT = 60.0           # seconds one GET ?wait= may hold the request


def _store(app: web.Application) -> InvocationStore:
    return app[INVOCATIONS]


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return ""
    if key.startswith("schedule:"):   # the schedules' own keys (scheduler.ticker)
        raise ApiError(400, "bad_request", f"{IDEMPOTENCY_KEY}: keys starting with schedule: are reserved")
    if not _IDEM_RE.match(key):
        raise ApiError(400, "bad_request", f"{IDEMPOTENCY_KEY}: expected 1 to 255 printable ASCII characters "
                                           "without spaces")
    return key


def _callback_url(request: web.Request) -> str:
    url = request.headers.get(CALLBACK_URL, "")
    if not url:
        return ""
    from ..invocations.callbacks import check_callback_url
    problem = check_callback_url(url)
    if problem:
        raise ApiError(400, "bad_request", f"{CALLBACK_URL}: {problem}")
    return url


async def _deployed(request: web.Request, name: str):
    entry = await request.app[CACHE].get(name)
    if entry is None or entry.known.active is None:
        raise ApiError(404, "not_found", f"no function named {request.match_info['name']!r} is deployed")
    return entry


async def _submit(request: web.Request, name: str, entry, *, priority: str, callback_url: str, idem: str):
    """Read and queue the request's invocation of function NAME, cached as ENTRY (the caller
    was admitted and may invoke it): keys.ASYNC_SUBMIT's outcome."""
    settings = request.app[SETTINGS]
    limit, source = body_limit(settings, entry.known.active)
    if settings.async_max_payload < limit:
        limit, source = settings.async_max_payload, "the gateway's GANTRY_ASYNC_MAX_PAYLOAD"
    body = await read_body(request, limit, source)
    submitted = await _store(request.app).submit(
        uuid.uuid4().hex, name, split(name)[0], entry.known.active.spec.async_policy, body,
        request.headers.get("Content-Type", "application/octet-stream"), priority=priority,
        idempotency_key=idem, idempotency_ttl=settings.idempotency_ttl, callback_url=callback_url)
    if submitted.outcome == "conflict":
        raise ApiError(422, "idempotency_conflict",
                       f"{IDEMPOTENCY_KEY} {idem!r} was used with a different body (invocation {submitted.id})",
                       {wire.INVOCATION_ID: submitted.id})
    if submitted.outcome == "created":
        _wake(request.app, name)
    return submitted


def _wake(app: web.Application, name: str) -> None:
    """Wake this gateway's dispatcher for NAME at once (the submit and replay scripts wake the
    others through keys.EVENTS)."""
    dispatcher = app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.wake(name)


async def submit(request: web.Request) -> web.Response:
    priority = request.headers.get(PRIORITY, "normal").lower()
    if priority not in PRIORITIES:
        raise ApiError(400, "bad_request", f"{PRIORITY}: expected one of {', '.join(PRIORITIES)}, got {priority[:20]!r}")
    principal: Principal = request[PRINCIPAL]
    request.app[ADMISSION].check(principal.key_id, asyncio.get_running_loop().time())
    name = function_name(principal, request.match_info["name"], "invoke")
    submitted = await _submit(request, name, await _deployed(request, name), priority=priority,
                              callback_url=_callback_url(request), idem=_idempotency_key(request))
    state = "queued"
    if submitted.outcome == "existing":
        known = await _store(request.app).get(submitted.id)
        state = str(known.state) if known is not None else "unknown"
    url = f"/v1/invocations/{submitted.id}"
    return web.json_response({"id": submitted.id, "state": state, "status_url": url,
                              "idempotent_replay": submitted.outcome == "existing"},
                             status=202, headers={"Location": url, wire.INVOCATION_ID: submitted.id})


async def _visible(request: web.Request, action: str = "invoke") -> Invocation:
    """The invocation the path names, if the caller may see it (404 otherwise: another
    tenant's invocation is not confirmed to exist)."""
    principal: Principal = request[PRINCIPAL]
    require(principal, action)
    inv_id = request.match_info["id"]
    inv = await _store(request.app).get(inv_id) if _ID_RE.match(inv_id) else None
    if inv is None or not _may_see(principal, inv):
        raise ApiError(404, "not_found", f"no invocation {inv_id[:40]!r}")
    return inv


def _may_see(principal: Principal, inv: Invocation) -> bool:
    if principal.is_admin:
        return True
    if inv.tenant != principal.tenant:
        return False
    return not principal.functions or split(inv.function)[1] in principal.functions


async def _wait_settled(app: web.Application, inv: Invocation, wait: float,
                        until: frozenset = SETTLED) -> Invocation:
    """INV, re-read until its state is in UNTIL (settled) or WAIT seconds pass (polling: 10 ms
    growing to 200 ms)."""
    deadline = time.monotonic() + wait
    pause = 0.01
    store = _store(app)
    while inv.state not in until and time.monotonic() < deadline:
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(0.2, pause * 1.5)
        again = await store.get(inv.id)
        if again is None:
            break
        inv = again
    return inv


def _wait_param(request: web.Request) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise ApiError(400, "bad_request", f"wait: expected seconds from 0 to {MAX_WAIT:g}, got {raw[:20]!r}")
    return wait


async def get_invocation(request: web.Request) -> web.Response:
    inv = await _visible(request)
    wait = _wait_param(request)
    if wait:
        inv = await _wait_settled(request.app, inv, wait)
    return web.json_response(view(inv))


async def get_result(request: web.Request) -> web.Response:
    """The result's bytes as the function returned them, with its content type."""
    inv = await _visible(request)
    if inv.state not in (State.SUCCEEDED, State.FAILED, State.DEAD) or inv.result is None:
        raise ApiError(409, "not_settled" if inv.state not in SETTLED else "no_result",
                       f"invocation {inv.id} is {inv.state} and has no result")
    return _result_response(inv)


def _result_response(inv: Invocation, replayed: bool = False) -> web.Response:
    headers = {wire.INVOCATION_ID: inv.id}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if inv.result_type:
        headers["Content-Type"] = inv.result_type
    return web.Response(status=inv.status or 200, body=inv.result or b"", headers=headers)


async def cancel(request: web.Request) -> web.Response:
    inv = await _visible(request)
    was = await _store(request.app).cancel(inv.id, request.app[SETTINGS].async_retention)
    if was not in (State.QUEUED, State.RETRYING):
        raise ApiError(409, "not_cancellable", f"invocation {inv.id} is {was or 'gone'}: only a queued or "
                                               "retrying invocation can be cancelled")
    return web.json_response({"id": inv.id, "state": "cancelled", "was": was})


async def idempotent_invoke(request: web.Request, name: str) -> web.Response:
    """A sync invoke with an Idempotency-Key (the caller was admitted and may invoke NAME):
    queued at high priority and waited for; a repeat of the key answers the first one's
    result (header Idempotent-Replayed); the same key with another body is a 422."""
    entry = await _deployed(request, name)
    settings = request.app[SETTINGS]
    asked = _asked_timeout(request)
    submitted = await _submit(request, name, entry, priority="high", callback_url="",
                              idem=_idempotency_key(request))
    inv = await _store(request.app).get(submitted.id)
    if inv is None:
        raise ApiError(404, "not_found", f"invocation {submitted.id} is gone (past its retention)")
    spec = entry.known.active.spec
    url = f"/v1/invocations/{inv.id}"
    ids = {wire.INVOCATION_ID: inv.id}
    # as a sync call: it must start within the cold-start timeout, then finish within its own
    inv = await _wait_settled(request.app, inv, settings.cold_start_timeout, _STARTED)
    if inv.state in (State.QUEUED, State.RETRYING):
        raise ApiError(503, "no_capacity", f"invocation {inv.id} did not start within {settings.cold_start_timeout:g}s; "
                       f"it stays queued: send the same {IDEMPOTENCY_KEY} again for its result", {**ids, "Retry-After": "1"})
    inv = await _wait_settled(request.app, inv, (asked or spec.limits.timeout) + settings.upstream_timeout_margin)
    if inv.result is not None and inv.state in (State.SUCCEEDED, State.FAILED, State.DEAD):
        return _result_response(inv, replayed=submitted.outcome == "existing")
    if inv.state not in SETTLED:
        raise ApiError(504, "timeout", f"invocation {inv.id} is still {inv.state}; its result will be at {url}",
                       {**ids, "Location": url})
    if inv.state == State.CANCELLED:
        raise ApiError(409, "cancelled", f"invocation {inv.id} was cancelled", ids)
    if inv.state == State.EXPIRED:
        raise ApiError(503, "no_capacity", f"invocation {inv.id} expired before it could run: {inv.error}",
                       {**ids, "Retry-After": "1"})
    raise ApiError(502, "function_crashed", f"invocation {inv.id} is {inv.state}: {inv.error or 'no answer'}", ids)


# --- dead letters -------------------------------------------------------------------------------

async def list_dead(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    require(principal, "read")
    tenant = tenant_filter(request, principal)
    function = request.query.get("function")
    limit = whole_number(request, "limit", 100, 1000)
    try:
        after = float(request.query.get("after", "0"))
    except ValueError:
        raise ApiError(400, "bad_request", "after: expected the `next` value of the previous page") from None
    store = _store(request.app)
    out: list[dict] = []
    cursor = after
    scanned = 0
    while len(out) < limit and scanned < 10_000:
        rows = await store.dead_letters(cursor, 200)
        if not rows:
            cursor = None
            break
        for inv_id, at in rows:
            scanned += 1
            cursor = at
            inv = await store.get(inv_id)
            if inv is None:
                await store.forget_dead(inv_id)     # its retention passed
                continue
            if (tenant is not None and inv.tenant != tenant) or (function and split(inv.function)[1] != function
                                                                 and inv.function != function):
                continue
            if not _may_see(principal, inv):
                continue
            item = view(inv)
            item["dead_at"] = at
            out.append(item)
            if len(out) >= limit:
                break
        if len(rows) < 200:
            cursor = None if len(out) < limit else cursor
            break
    return web.json_response({"invocations": out, "next": None if cursor is None else repr(cursor + 1e-6)})


async def _dead(request: web.Request, action: str) -> Invocation:
    inv = await _visible(request, action)
    if inv.state not in (State.DEAD, State.EXPIRED):
        raise ApiError(404, "not_found", f"invocation {inv.id} is {inv.state}, not a dead letter")
    return inv


async def show_dead(request: web.Request) -> web.Response:
    inv = await _dead(request, "read")
    out = view(inv)
    if inv.body is not None:
        out["payload_size"] = len(inv.body)
        out["content_type"] = inv.content_type
    return web.json_response(out)


async def replay(request: web.Request) -> web.Response:
    inv = await _dead(request, "invoke")
    entry = await request.app[CACHE].get(inv.function)
    if entry is None or entry.known.active is None:
        raise ApiError(409, "not_deployed", f"function {inv.function!r} is no longer deployed")
    was = await _store(request.app).replay(inv, entry.known.active.spec.async_policy.max_event_age)
    if was not in (State.DEAD, State.EXPIRED):
        raise ApiError(409, "not_dead", f"invocation {inv.id} is {was or 'gone'}")
    _wake(request.app, inv.function)
    return web.json_response({"id": inv.id, "state": "queued", "status_url": f"/v1/invocations/{inv.id}"},
                             status=202)


async def purge(request: web.Request) -> web.Response:
    inv = await _dead(request, "deploy")
    await _store(request.app).purge(inv.id)
    return web.json_response({"id": inv.id, "purged": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/invoke/{name}/async", submit)
    app.router.add_get("/v1/invocations/{id}", get_invocation)
    app.router.add_get("/v1/invocations/{id}/result", get_result)
    app.router.add_delete("/v1/invocations/{id}", cancel)
    app.router.add_get("/v1/dlq", list_dead)
    app.router.add_get("/v1/dlq/{id}", show_dead)
    app.router.add_post("/v1/dlq/{id}/replay", replay)
    app.router.add_delete("/v1/dlq/{id}", purge)

"""``POST /v1/invoke/{name}``: read the body (bounded), pick a ready instance (or signal demand
and wait, bounded), forward, and stream the answer back unbuffered.  A vLLM function's
OpenAI-compatible routes (``/v1/invoke/{name}/v1/chat/completions`` and the others of
gateway.openai.ROUTES) take the same path, with the engine's route and the instance key as
its bearer key, and count the tokens of the answer.

Delivery: at most once per forward, and a request is forwarded again only when the instance
cannot have started it.  That is when the instance answers 503 ``draining``, ``at_capacity``
or ``starting`` (the runtime says so before it reads the body), refuses the connection, or a
connection closed before any byte of the request was written; then the instance is skipped
and the request goes to another, up to ``settings.max_tries`` forwards.  A connection that
breaks once the request was sent (the handler crashed or exited, the container was killed or
ran out of memory) is never retried: the function may have run, so the caller gets 502
``function_outcome_unknown`` and decides.  Retrying it would run a side effect again, and a
request that kills its instance would kill the next one too.

Once the response headers have gone to the client nothing can be reported as an error status:
if the upstream breaks then, the client's connection is closed without the final chunk, so a
truncated body never looks complete.
"""
from __future__ import annotations

import asyncio
import logging
import itertools
import os
import time

from aiohttp import web
from multidict import CIMultiDict
from gantry_runtime import wire
from gantry_runtime.wire import ErrorCode

from . import openai, tracing, upstream
from .appkeys import ADMISSION, AUTH, CACHE, COORD_ADMISSION, METRICS, PRINCIPAL, REPORTER, SETTINGS, UPSTREAM
from ..cancellation import raise_if_cancelled
from .auth import function_name
from .balancer import Ticket
from .cache import Active, Entry
from .errors import ApiError, quota_error
from .front import COORD, COORD_PREFIX, Answer, Call, Stream
from .metrics import UNKNOWN
from .settings import GatewaySettings
from .tenantlimits import TENANT_LIMITS
from ..state import Instance
from ..tenants.model import split

log = logging.getLogger("gantry.gateway")

READ_CHUNK = 64 * 1024
POLL_INTERVAL = 0.1           # a waiting request rereads the instance set at least this often
CONNECT_TIMEOUT = 3.0         # seconds to open a connection to an instance
RETRYABLE_503 = {ErrorCode.AT_CAPACITY: 0.05, ErrorCode.DRAINING: 5.0,   # the runtime's code ->
                 ErrorCode.STARTING: 1.0}                                # seconds to skip it
CONNECT_SUSPEND = 2.0
# An instance's response headers that stop here: hop-by-hop, the framing (this hop sets its own)
# and the instance server's Date and Server.  Everything else is the function's and goes on.
_DROP_LOWER = wire.HOP_BY_HOP | wire.FRAMING | frozenset(("date", "server"))
IDEMPOTENCY_KEY = "Idempotency-Key"   # a sync invoke with one runs once (gateway.async_api)
SMALL_BODY = 64 * 1024        # an upstream body of known length up to this is answered in one piece
NOT_OPENAI = "not_openai_compatible"   # an OpenAI-compatible route of a function that is not vLLM


# Invocation ids: 32 hex digits, a random per-process prefix and a counter (uuid4 per request
# costs a getrandom syscall and object churn on the hot path).
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count()


class _Retry(Exception):
    def __init__(self, reason: str, connection: bool) -> None:
        super().__init__(reason)
        self.reason, self.connection = reason, connection


def body_limit(settings: GatewaySettings, active: Active | None) -> tuple[int, str]:
    """The request body limit of a function and where it comes from: its active version's
    ``[limits] max_body`` if set, else the gateway's GANTRY_MAX_BODY.  (The worker starts the
    runtime with the same limit, or with manifest.MAX_BODY, so it never refuses what passed.)"""
    if active is not None and active.spec.limits.max_body:
        return active.spec.limits.max_body, "this function's [limits] max_body"
    return settings.max_body, "the gateway's GANTRY_MAX_BODY"


def _size(n: int) -> str:
    """6291456 -> "6 MiB"; a size that is no whole binary unit stays in bytes."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


async def read_body(request: web.Request, limit: int, source: str) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes whatever Content-Length says
    (a chunked body has none; aiohttp's client_max_size does not apply to request.content).
    The 413 names the limit and SOURCE, the setting that made it."""
    too_large = ApiError(413, ErrorCode.TOO_LARGE, f"request body is over the limit of {_size(limit)} ({source})")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    buf = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(buf)
        if len(buf) + len(chunk) > limit:
            raise too_large
        buf += chunk


def _asked_timeout(request: web.Request) -> float | None:
    """The caller's X-Gantry-Timeout (it may lower the function's timeout, never raise it)."""
    try:
        return wire.parse_timeout(request.headers.get(wire.TIMEOUT))
    except wire.BadTimeout as exc:
        raise ApiError(400, ErrorCode.BAD_REQUEST, str(exc)) from None


class Route:
    """Where a forward goes on the instance: the runtime's ``POST /invoke``, or one of a vLLM
    function's OpenAI-compatible routes (gateway.openai.ROUTES)."""
    __slots__ = ("method", "path", "openai", "counts_tokens")

    def __init__(self, method: str, path: str, openai_route: bool = False, counts_tokens: bool = False) -> None:
        self.method, self.path, self.openai, self.counts_tokens = method, path, openai_route, counts_tokens


INVOKE = Route("POST", "/invoke")
OPENAI = {key: Route(*key, openai_route=True, counts_tokens=counts) for key, counts in openai.ROUTES.items()}
COORD_ROUTE = Route("*", COORD_PREFIX)
# what gateway.front serves itself: (method, the path after /v1/invoke/NAME) -> route, and
# the coordination API
FRONT_ROUTES = {("POST", ""): INVOKE, **OPENAI, COORD: COORD_ROUTE}


async def serve_call(call: Call, route: Route) -> web.StreamResponse | Stream:
    """A request the front serves (gateway.front): its key, as auth_middleware checks it on
    the aiohttp side, then the same admission and forward; or a coordination call, limited
    per key as auth_middleware limits it, to its gateway.coord_api handler."""
    app = call.app
    principal = call[PRINCIPAL] = await app[AUTH].authenticate(call)
    if route is COORD_ROUTE:
        app[COORD_ADMISSION].check(principal.key_id, asyncio.get_running_loop().time())
        match = call.match_info = await app.router.resolve(call)
        return await match.handler(call)
    return await _admitted(call, route)


async def invoke(request: web.Request) -> web.StreamResponse:
    """``POST /v1/invoke/{name}``."""
    return await _admitted(request, INVOKE)


def openai_handler(route: Route):
    """The handler of ``/v1/invoke/{name}`` + ROUTE's path (``/v1/chat/completions``,
    ``/v1/completions``, ``/v1/models``): the same admission as invoke, forwarded to the
    engine's route of the same path."""
    async def invoke_openai(request: web.Request) -> web.StreamResponse:
        return await _admitted(request, route)
    return invoke_openai


async def _admitted(request: web.Request, route: Route) -> web.StreamResponse:
    metrics = request.app[METRICS]
    label, status, started = UNKNOWN, 500, time.monotonic()
    name = None          # qualified, once the caller may address it
    metered = True
    release = None       # the tenant's concurrency slot, if its quota has one
    trace = tracing.begin(request)   # None: tracing is off
    try:
        principal = request[PRINCIPAL]
        now = asyncio.get_running_loop().time()
        request.app[ADMISSION].check(principal.key_id, now)     # first: the cheapest refusal
        name = function_name(principal, request.match_info["name"], "invoke")
        if IDEMPOTENCY_KEY in request.headers:   # runs as an async invocation, metered by the dispatcher
            if route.openai:
                raise ApiError(400, ErrorCode.BAD_REQUEST, f"{IDEMPOTENCY_KEY} is not supported on the "
                               "OpenAI-compatible routes (it runs a call as an async invocation of /invoke)")
            from .async_api import idempotent_invoke
            metered = False
            resp = await idempotent_invoke(request, name)
            label, status = name, resp.status
            return resp
        # quotas are the function's tenant's (the platform admin may call any tenant's)
        release = await request.app[TENANT_LIMITS].admit(split(name)[0], now)
        if trace is not None:
            trace.admit()
        entry = await request.app[CACHE].get(name)
        if entry is None:
            status = 404
            raise ApiError(404, "not_found", f"no function named {request.match_info['name']!r} is deployed")
        if route.openai:
            active = entry.known.active
            if active is None or active.spec.runtime != openai.RUNTIME:
                status = 404
                raise ApiError(404, NOT_OPENAI, f"function {request.match_info['name']!r} is not a vLLM function "
                               f"(runtime {active.spec.runtime if active else 'unknown'!r}): it serves "
                               f"POST /v1/invoke/NAME only, not {route.path}")
        label = name
        resp = await _invoke(request, entry, route)
        status = resp.status
        return resp
    except ApiError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499   # the client went away
        raise
    finally:
        if release is not None:
            release()
        if trace is not None:
            trace.end(status, name)
        # usage is the function's tenant's, by the function's own name; a request throttled
        # before its name was resolved counts in the caller's tenant, under the name it asked
        asked = None
        if label == UNKNOWN and metered:
            asked = split(name) if name is not None else (request[PRINCIPAL].tenant, request.match_info["name"])
        metrics.finished(label, status, started, metered, asked)


async def _invoke(request: web.Request, entry: Entry, route: Route) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    t0 = time.monotonic()
    trace = request.get(tracing.TRACE)
    entry.load.last_request = time.time()
    asked = _asked_timeout(request)
    # a GET (/v1/models) forwards no body; a caller's is not read
    body = b"" if route.method == "GET" else await read_body(request, *body_limit(settings, entry.known.active))
    inv_id = f"{_ID_PREFIX}{next(_ids):016x}"
    ids = {wire.INVOCATION_ID: inv_id}
    # an engine loads its model for a minute or more: a vLLM function's caller waits longer
    cold_wait = settings.engine_cold_start_timeout if route.openai else settings.cold_start_timeout
    cold_deadline = t0 + cold_wait
    exclude: set[str] = set()
    last: _Retry | None = None
    for attempt in range(settings.max_tries):
        ticket = entry.routing.balancer.pick(exclude)
        if ticket is None:
            waiting = wait_for_slot(request.app, entry, exclude, cold_deadline)
            ticket = await (waiting if trace is None or not trace.sampled else trace.cold_wait(waiting, entry.name))
        if ticket is None:
            if not entry.known.exists:
                raise ApiError(404, "not_found", f"function {entry.name!r} was deleted")
            failed = entry.known.start_failure()
            if failed:       # waiting would not help: say why now, not after the cold-start timeout
                raise ApiError(502, ErrorCode.FUNCTION_START_FAILED,
                               f"function {entry.name!r} version {entry.known.start_failed.version} "
                               f"could not start: {failed}", ids)
            if entry.known.pending_quota is not None:   # no instance can start: its tenant's quota
                raise quota_error(entry.known.pending_quota, ids)
            break
        inst = ticket.instance
        active = entry.known.active
        if active is None:   # cannot happen: a deleted function has no live instance to pick
            entry.routing.release(ticket)
            raise ApiError(404, "not_found", f"function {entry.name!r} was deleted")
        timeout = active.spec.limits.timeout if asked is None else min(active.spec.limits.timeout, asked)
        # Built afresh: no header of the caller's but Content-Type reaches the runtime, so a
        # caller cannot set the tenant, the invocation id or the instance key.
        headers = {**ids, wire.TIMEOUT: wire.format_timeout(timeout), wire.TENANT: request[PRINCIPAL].tenant,
                   wire.INSTANCE_KEY: inst.key}
        if route.openai:
            # the engine's --api-key is the instance key: it guards the engine's /v1/* routes
            headers["Authorization"] = f"Bearer {inst.key}"
            if route.method != "GET":
                headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        else:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/octet-stream")
        if trace is None:
            if wire.TRACEPARENT in request.headers:   # tracing off: still the caller's trace
                headers[wire.TRACEPARENT] = request.headers[wire.TRACEPARENT]
        elif not trace.sampled:       # outside the sample: no span, the trace id still goes on
            trace.propagate(headers)
        entry.load.inflight += 1
        forwarded = time.monotonic()
        try:
            forwarding = _forward(request, entry, inst, route, body, headers,
                                  timeout + settings.upstream_timeout_margin, ids)
            return await (forwarding if trace is None or not trace.sampled
                          else trace.forward(forwarding, headers, inst.id))
        except _Retry as retry:
            last = retry
            if retry.reason != "at_capacity":
                exclude.add(inst.id)
            entry.routing.balancer.suspend(
                inst.id, CONNECT_SUSPEND if retry.connection else RETRYABLE_503[retry.reason])
            app[METRICS].retries[entry.name] += 1
            log.info("retrying on another instance", extra={
                "function": entry.name, "instance": inst.id, "reason": retry.reason,
                "attempt": attempt + 1, "invocation_id": inv_id})
        finally:
            app[METRICS].forwarded(entry.name, forwarded)
            entry.load.inflight -= 1
            entry.routing.release(ticket)
    if last is not None and last.connection:
        raise ApiError(502, "function_crashed",
                       f"no instance of {entry.name!r} could be reached ({last.reason})", ids)
    why = (f"every instance tried was busy or draining ({last.reason})" if last is not None else
           f"no instance of {entry.name!r} became free within {cold_wait:g}s"
           + (f": {entry.known.pending_reason}" if entry.known.pending_reason else ""))
    raise ApiError(503, "no_capacity", why, {**ids, "Retry-After": "1"})


async def wait_for_slot(app: web.Application, entry: Entry, exclude: set[str], deadline: float
                        ) -> Ticket | None:
    """Signal demand and wait for a free slot on a ready instance; None at the deadline (or
    sooner, when waiting cannot help: deleted, its start failed, its tenant's quota)."""
    cache, reporter = app[CACHE], app[REPORTER]
    waited = app[METRICS].cold_wait_started(entry.name)
    entry.load.waiting += 1
    try:
        await reporter.signal_demand(entry)
        raise_if_cancelled()
        while True:
            if not entry.known.exists:
                return None
            cache.raise_if_unreachable(entry)      # Redis went away while we waited: 503 now
            ticket = entry.routing.balancer.pick(exclude)
            if ticket is not None:
                return ticket
            if entry.known.start_failure():
                return None                # its last start failed: the caller answers 502 with why
            if entry.known.pending_quota is not None and not entry.routing.balancer.ready:
                return None                # nothing serves it and its quota stops a start: 403
            now = time.monotonic()
            if now >= deadline:
                return None
            woke = await entry.routing.changed.wait(min(POLL_INTERVAL, deadline - now))
            if not woke and time.monotonic() - entry.known.fetched >= POLL_INTERVAL:
                cache.refresh(entry)       # the fallback poll; a pub/sub hint usually comes first
                await reporter.signal_demand(entry)   # at most one per 100 ms per function
                raise_if_cancelled()
    finally:
        app[METRICS].cold_wait_ended(entry.name, waited)
        entry.load.waiting -= 1


def _passthrough(headers: list[tuple[str, str]]) -> CIMultiDict:
    """The instance's end-to-end headers, repeated ones (Set-Cookie) kept.  The runtime lets a
    handler set no hop-by-hop or X-Gantry-* header; this is the gateway's own guard."""
    out: CIMultiDict = CIMultiDict()
    named = ()
    for k, v in headers:
        lk = k.lower()
        if lk == "connection":       # it may name more hop-by-hop headers
            named = tuple(t.strip() for t in v.lower().split(","))
        elif lk not in _DROP_LOWER:
            out.add(k, v)
    for name in named:
        out.popall(name, None)
    return out


async def _forward(request: web.Request, entry: Entry, inst: Instance, route: Route, body: bytes,
                   headers: dict[str, str], limit: float, ids: dict[str, str]) -> web.StreamResponse:
    pool = request.app[UPSTREAM]
    tail: openai.Tail | None = None     # the end of a streamed answer whose tokens are counted
    out: web.StreamResponse | Stream | None = None
    up: upstream.Response | None = None
    try:
        async with asyncio.timeout(limit):
            try:
                up = await pool.request(route.method, inst.host, inst.port, route.path, headers, body)
            except upstream.UpstreamError as exc:
                if not exc.request_sent:      # the instance never saw it: safe elsewhere
                    raise _Retry(str(exc), connection=True) from None
                if isinstance(exc, upstream.BadResponse):
                    raise ApiError(502, "function_crashed", f"instance answered badly: {exc}", ids) from None
                # It may be dead: keep the next requests off it until the worker reports.
                entry.routing.balancer.suspend(inst.id, CONNECT_SUSPEND)
                log.warning("instance broke off after the request was sent; not retried", extra={
                    "function": entry.name, "instance": inst.id, "error": str(exc),
                    "invocation_id": ids[wire.INVOCATION_ID]})
                raise ApiError(502, ErrorCode.FUNCTION_OUTCOME_UNKNOWN,
                               f"the instance of {entry.name!r} broke off after the request was sent "
                               f"({exc}); the function may have run, so the gateway did not retry it",
                               ids) from None
            if up.status == 503 and not route.openai:   # the engine's 503 is its own: passed on
                data = await up.read()
                code, _ = wire.parse_error(data) or ("", "")
                if code in RETRYABLE_503:
                    raise _Retry(code, connection=False)
                return _answer(request, 503, data, _passthrough(up.headers))
            answer_headers = _passthrough(up.headers)
            if route.openai:             # the runtime sends the id back; the engine does not know it
                answer_headers[wire.INVOCATION_ID] = ids[wire.INVOCATION_ID]
            length = up.content_length
            if length is not None and length <= SMALL_BODY:
                # A small body of known length is not a stream: read it, answer it in one write.
                data = await up.read()
                if route.counts_tokens and up.status == 200:
                    _count_tokens(request, entry, openai.usage_of(data[-openai.TAIL:]))
                return _answer(request, up.status, data, answer_headers)
            if route.counts_tokens and up.status == 200:
                tail = openai.Tail()
            out = (request.open_stream(up.status, answer_headers) if type(request) is Call
                   else web.StreamResponse(status=up.status, headers=answer_headers))
            if length is not None:
                out.content_length = length
            try:
                await out.prepare(request)
            except ConnectionError:
                return out           # the client is gone already
            while True:
                try:
                    chunk = await up.read_chunk()
                except upstream.UpstreamError as exc:
                    _abort(request, entry, request.app[METRICS], f"upstream broke: {exc}")
                    return out
                if not chunk:
                    break
                if tail is not None:
                    tail.feed(chunk)
                try:
                    await out.write(chunk)   # each chunk goes to the client as it arrives
                except ConnectionError:
                    log.info("client went away mid-stream", extra={"function": entry.name, **ids})
                    return out
            up.release()                 # fully read: the connection goes back to the pool
            if tail is not None:         # a complete answer only: a cut one has no final usage
                _count_tokens(request, entry, tail.usage())
            try:
                await out.write_eof()
            except ConnectionError:
                pass
            return out
    except TimeoutError:
        if out is None or not out.prepared:
            raise ApiError(504, "timeout", f"the instance did not answer within {limit:g}s", ids) from None
        _abort(request, entry, request.app[METRICS], "timeout")
        return out
    except upstream.UpstreamError as exc:   # reading a body before any header went out failed
        raise ApiError(502, "function_crashed", f"the instance broke off: {exc}", ids) from None
    finally:
        if up is not None:
            up.release()   # a complete read returns the connection; anything else closes it,
                           # cancelling upstream work


def _answer(request: web.Request | Call, status: int, body: bytes, headers: CIMultiDict) -> web.Response | Answer:
    """A whole answer: for the front, the bare fields it writes (an aiohttp Response costs
    more to build than the rest of the answer)."""
    if type(request) is Call:
        return Answer(status, headers, body)
    return web.Response(status=status, body=body, headers=headers)


def _count_tokens(request: web.Request, entry: Entry, usage: tuple[int, int] | None) -> None:
    if usage is not None:
        request.app[METRICS].tokens(entry.name, *usage)


def _abort(request: web.Request, entry: Entry, metrics, why: str) -> None:
    """Headers are sent: the only honest signal left is a broken connection."""
    metrics.upstream_aborts[entry.name] += 1
    log.warning("aborting a response mid-stream", extra={"function": entry.name, "reason": why})
    if request.transport is not None:
        request.transport.close()

"""The gateway application: ``create_app(settings)`` and ``serve(settings, stop_event)``.

Resources live in ``cleanup_ctx`` (the Redis client, the pooled client session to instances,
the background tasks), so a test server and ``gantry up`` set up and tear down alike.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiohttp import web

from . import admin, async_api, callbacks_api, coord_api, metrics_api, openapi, secrets_api, tenants_api, usage
from .admission import Admission
from ..invocations.store import InvocationStore
from ..store import Store
from ..tenants.store import TenantStore
from ..settings import redis_client
from .appkeys import (ADMIN_ADMISSION, ADMISSION, AUTH, CACHE, COORD_ADMISSION, INVOCATIONS, METRICS, PRINCIPAL,
                      REDIS, REPORTER, SETTINGS, STORE, TENANTS, UPSTREAM)
from .auth import ADMIN, COORD_PATH, Authenticator, require_admin
from .background import CacheRefresher, LoadLoop, run_every
from .cache import FunctionCache, listen_events
from .dispatch import DISPATCHER, dispatch_ctx
from .errors import error_middleware
from .front import GatewayRunner
from .invoke import CONNECT_TIMEOUT, FRONT_ROUTES, OPENAI, invoke, openai_handler, serve_call
from .load import LoadReporter
from .metrics import Metrics, metrics_ctx
from .schedules_api import add_routes as add_schedule_routes
from .settings import GatewaySettings
from .tenantlimits import TENANT_LIMITS, tenant_limits_ctx
from .tracing import tracing_ctx
from .upstream import UpstreamPool

log = logging.getLogger("gantry.gateway")


def _needs_key(request: web.Request) -> bool:
    path = request.path
    if path == "/metrics":
        return not request.app[SETTINGS].metrics_public
    if path == openapi.PATH:     # the API's description is public, as the docs are
        return False
    return path.startswith("/v1/") or path == "/v1"


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The bearer key of every /v1 call and of /metrics (unless GANTRY_METRICS_PUBLIC); admin
    API calls and /metrics then count against the key's admin limit, /v1/coord/ calls against
    its coordination limit (agents call it at the rate of their work, not of an operator's),
    and invocations are admitted per key in invoke."""
    if _needs_key(request):
        principal = request[PRINCIPAL] = await request.app[AUTH].authenticate(request)
        path = request.path
        if path.startswith(COORD_PATH):
            request.app[COORD_ADMISSION].check(principal.key_id, asyncio.get_running_loop().time())
        elif not path.startswith("/v1/invoke/"):
            if path == "/metrics":
                require_admin(principal)
            request.app[ADMIN_ADMISSION].check(principal.key_id, asyncio.get_running_loop().time())
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "gateway": request.app[SETTINGS].gateway_id})


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=openapi.BODY, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    entries = request.app[CACHE].entries.values()
    text = request.app[METRICS].render({e.name: e.load.inflight for e in entries if e.known.exists},
                                       {e.name: e.load.waiting for e in entries if e.known.exists})
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _redis_ctx(app: web.Application):
    client = redis_client(app[SETTINGS].redis_url)
    app[REDIS] = client
    app[STORE] = Store(client)
    app[INVOCATIONS] = InvocationStore(client)
    app[TENANTS] = app[AUTH].keys = TenantStore(client)
    yield
    await client.aclose()


async def _upstream_ctx(app: web.Application):
    pool = UpstreamPool(connect_timeout=CONNECT_TIMEOUT, keepalive=UPSTREAM_KEEPALIVE)
    app[UPSTREAM] = pool

    async def sweep() -> None:
        pool.sweep()
    sweeper = asyncio.create_task(run_every(UPSTREAM_KEEPALIVE / 3, sweep, "idle connection sweep"),
                                  name="gantry-upstream-sweep")
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)
    await pool.close()


UPSTREAM_KEEPALIVE = 15.0   # seconds an idle connection to an instance is kept (the runtime keeps 75)


async def _state_ctx(app: web.Application):
    settings = app[SETTINGS]
    r = app[REDIS]
    cache = FunctionCache(app[STORE], negative_ttl=settings.cache_refresh_interval)
    app[CACHE] = cache
    app[REPORTER] = LoadReporter(app[STORE], cache, settings.gateway_id)
    refresher = CacheRefresher(app[STORE], cache, app[AUTH], fixed_admin_hash=settings.admin_key_hash is not None)
    try:
        await refresher.refresh_admin_hash()
    except Exception as exc:  # the refresh loop retries; until then no key is accepted
        log.warning("cannot read the admin key hash yet", extra={"error": repr(exc)})
    tasks = [
        asyncio.create_task(listen_events(app[STORE], _on_event(app), on_reconnect=cache.refresh_all),
                            name="gantry-events"),
        asyncio.create_task(run_every(settings.cache_refresh_interval, refresher._iteration, "cache refresh"),
                            name="gantry-cache-refresh"),
        asyncio.create_task(run_every(ADMISSION_SWEEP, _sweeper(app[ADMISSION], app[ADMIN_ADMISSION],
                                                                app[COORD_ADMISSION], app[AUTH].failures),
                                      "rate-limit sweep"),
                            name="gantry-ratelimit-sweep"),
        asyncio.create_task(run_every(settings.load_report_interval, LoadLoop(app[REPORTER])._iteration,
                                      "load report"), name="gantry-load-report"),
    ]
    shared = app[ADMISSION].share(r)
    app[ADMISSION].track(ADMIN.key_id)
    if shared is not None:
        tasks.append(asyncio.create_task(shared.run(), name="gantry-shared-limits"))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await cache.close()


def _on_event(app: web.Application):
    """The one keys.EVENTS listener's dispatch: keys to the authenticator, tenants to the
    quota cache (set up after this listener starts, so looked up per message), the rest to
    the function cache."""
    def on_event(message: str) -> None:
        kind, _, name = message.partition(":")
        if kind == "key":
            app[AUTH].forget(name)   # revoked (or its tenant removed): refuse it from now on
        elif kind == "async":
            dispatcher = app.get(DISPATCHER)
            if dispatcher is not None:
                dispatcher.wake(name)    # another gateway queued work for NAME
        elif kind == "tenant":
            limits = app.get(TENANT_LIMITS)
            if limits is not None:
                limits.on_event(message)
        else:
            app[CACHE].on_event(message)
    return on_event


ADMISSION_SWEEP = 10.0   # seconds between sweeps of idle rate-limit keys


def _sweeper(*admissions: Admission):
    async def sweep() -> None:
        now = asyncio.get_running_loop().time()
        for admission in admissions:
            admission.sweep(now)
    return sweep


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings.admin_key_hash, Admission(
        settings.auth_failure_rate, settings.auth_failure_burst, "too many wrong API keys from this address"))
    app[METRICS] = Metrics(enabled=settings.metrics)
    app[ADMISSION] = Admission(settings.rate_limit, settings.rate_burst)
    app[ADMIN_ADMISSION] = Admission(settings.admin_rate_limit, settings.admin_rate_burst,
                                     "admin API rate limit exceeded")
    app[COORD_ADMISSION] = Admission(settings.coord_rate_limit, settings.coord_rate_burst,
                                     "coordination rate limit exceeded")
    app.cleanup_ctx.extend([_redis_ctx, _upstream_ctx, _state_ctx, tenant_limits_ctx, usage.usage_ctx, dispatch_ctx,
                            callbacks_api.callbacks_ctx, metrics_ctx])
    app.cleanup_ctx.append(tracing_ctx)   # OpenTelemetry when GANTRY_OTLP_ENDPOINT is set
    app.router.add_post("/v1/invoke/{name}", invoke)
    for route in OPENAI.values():          # a vLLM function's engine routes (gateway.openai)
        app.router.add_route(route.method, "/v1/invoke/{name}" + route.path, openai_handler(route))
    async_api.add_routes(app)
    admin.add_routes(app)
    tenants_api.add_routes(app)
    coord_api.add_routes(app)
    secrets_api.add_routes(app)
    usage.add_routes(app)
    metrics_api.add_routes(app)
    add_schedule_routes(app)
    callbacks_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(openapi.PATH, openapi_json)
    return app


def make_runner(app: web.Application, **kwargs) -> GatewayRunner:
    """The runner of a gateway app: gateway.front (invocations served on httptools, the rest by
    the app), the request-head deadline and JSON answers to malformed requests; a client that
    disconnects cancels its request's work."""
    settings = app[SETTINGS]
    kwargs.setdefault("handler_cancellation", True)
    return GatewayRunner(app, header_timeout=settings.header_timeout, keepalive_timeout=settings.keepalive_timeout,
                         routes=FRONT_ROUTES, serve=serve_call, **kwargs)


async def serve(settings: GatewaySettings, stop_event: asyncio.Event,
                on_started: Callable[[int], None] | None = None) -> None:
    """Run the gateway until ``stop_event`` is set (``gantry up`` runs it in-process).
    ``on_started`` gets the bound port (useful with port 0)."""
    app = create_app(settings)
    runner = make_runner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        # several workers share the port: the kernel spreads connections over them (gateway.workers)
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_port=settings.workers > 1 or None)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        log.info("gateway listening", extra={"host": settings.host, "port": port, "gateway": settings.gateway_id})
        if on_started is not None:
            on_started(port)
        await stop_event.wait()
    finally:
        await runner.cleanup()

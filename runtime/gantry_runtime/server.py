"""The app (``/invoke``, ``/healthz``, served by ``httpserver``) and the process lifecycle:
listen, import the handler, serve, drain once told to stop (``__main__`` sets ``stop`` on
SIGTERM/SIGINT), stop."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from typing import Any, Callable

from . import pids
from .httpserver import HttpServer, Request, Response, error_response, json_response
from .invoke import Invoker
from .loader import load_handler
from .settings import Settings
from .check import describe
from .detached import Detached
from .wire import ATTEMPT, INSTANCE_KEY, INVOCATION_ID, READY_MSG, ErrorCode, StartFailure, key_matches

EXIT_OK, EXIT_LISTEN, EXIT_IMPORT = 0, 1, 3
REAP_EVERY = 1.0     # seconds between looks at the pids counters (gantry_runtime.pids)


class State:
    """What the app knows about the process: its phase and, once imported, the handler."""

    __slots__ = ("settings", "phase", "invoker", "pids_at", "last_request", "detached")

    def __init__(self, settings: Settings, pids_at: str | None = None) -> None:
        self.settings = settings
        self.phase = "starting"  # -> "ready" -> "draining"
        self.invoker: Invoker | None = None
        self.pids_at = pids_at   # the cgroup directory with pids.current/pids.max, if any
        self.last_request = 0.0  # monotonic time the last /invoke arrived
        self.detached = Detached()   # async attempts by (invocation id, attempt)


STATE = "state"


class App:
    """The runtime's two routes over one ``State``; ``app[STATE]`` is the state."""

    __slots__ = ("state",)

    def __init__(self, state: State) -> None:
        self.state = state

    def __getitem__(self, key: str) -> State:
        if key != STATE:
            raise KeyError(key)
        return self.state

    async def route(self, request: Request) -> Any:
        path, method = request.path, request.method
        if path == "/invoke" and method == "POST":
            return await _invoke(request, self.state)
        if path == "/healthz" and method in ("GET", "HEAD"):
            return _healthz(self.state)
        return _not_found(request)

    def close(self) -> None:
        if self.state.invoker is not None:
            self.state.invoker.close()


async def _invoke(request: Request, state: State) -> Any:
    state.last_request = time.monotonic()
    key = state.settings.instance_key
    if key and not key_matches(key, request.headers.get(INSTANCE_KEY)):
        # Checked first: a caller without the key learns nothing, not even the phase.
        return error_response(403, ErrorCode.FORBIDDEN, f"{INSTANCE_KEY} is missing or wrong: "
                              "only the gateway invokes this instance")
    attempt, inv_id = request.headers.get(ATTEMPT), request.headers.get(INVOCATION_ID)
    if attempt and inv_id:     # an async attempt: asking again joins it (even while draining)
        return await state.detached.serve((inv_id, attempt), lambda: _run(request, state))
    return await _run(request, state)


async def _run(request: Request, state: State) -> Any:
    if state.phase != "ready" or state.invoker is None:
        if state.phase == "starting":
            code, message = ErrorCode.STARTING, "the handler is still being imported"
        else:
            code, message = ErrorCode.DRAINING, "this instance is shutting down"
        resp = error_response(503, code, message, {"Retry-After": "1"})
        if state.phase == "draining":
            resp.force_close()      # no keep-alive: the process is about to go
        return resp
    return await state.invoker.handle(request)


def _healthz(state: State) -> Response:
    """Open to anyone who reaches the port (the worker probes it without the key): the phase,
    the function's name and slot counts, nothing secret."""
    body: dict[str, Any] = {"status": state.phase, "function": state.settings.function}
    inv = state.invoker
    if inv is not None:
        body.update(inflight=inv.inflight, concurrency=inv.concurrency, stuck=inv.stuck)
    ok = state.phase == "ready"
    usage = pids.read(state.pids_at)
    if usage is not None:
        body["pids"] = {"current": usage.current, "max": usage.limit}
        if ok and usage.exhausted:      # ready, but cannot start a thread or a process
            ok, body["status"] = False, "exhausted"
            body["reason"] = f"every pid is in use ({usage.current} of {usage.limit})"
    return json_response(body, status=200 if ok else 503)


async def _reap_under_pressure(place: str, log: logging.Logger) -> None:
    """Reap the runtime's exited children after the pids came under pressure (see pids)."""
    pressure = pids.Pressure()
    while True:
        await asyncio.sleep(REAP_EVERY)
        usage = pids.read(place)
        if pressure.due(usage, time.monotonic()):
            reaped = pids.reap()
            if reaped:
                log.warning("reaped exited child processes nobody waited for",
                            extra={"reaped": reaped, "pids": usage.current if usage else None,
                                   "pids_max": usage.limit if usage else None})


def _not_found(request: Request) -> Response:
    return error_response(404, ErrorCode.NOT_FOUND, f"no route {request.method} {request.path}; "
                          "use POST /invoke or GET /healthz")


def create_app(settings: Settings, pids_at: str | None = None) -> App:
    return App(State(settings, pids_at))


async def start_server(app: App, host: str, port: int) -> HttpServer:
    """Serve ``app`` on HOST:PORT (an OSError if it cannot listen)."""
    server = HttpServer(app.route, max_body=app.state.settings.max_body,
                        log=logging.getLogger("gantry.runtime"))
    await server.listen(host, port, backlog=1024)
    return server


def _import_in_thread(settings: Settings) -> asyncio.Future:
    """Import the handler in a daemon thread (a hung import must not keep the process alive)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not fut.done():
            setter(value)

    def report(setter: Callable[[Any], None], value: Any) -> None:
        try:
            loop.call_soon_threadsafe(settle, setter, value)
        except RuntimeError:  # the loop is gone: stopped while importing
            pass

    def work() -> None:
        try:
            handler = load_handler(settings.code_dir, settings.handler)
        except BaseException as exc:  # SyntaxError and SystemExit too: report, never crash silently
            report(fut.set_exception, exc)
        else:
            report(fut.set_result, handler)

    threading.Thread(target=work, name="gantry-import", daemon=True).start()
    return fut


async def serve(settings: Settings, log: logging.Logger, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set, then drain; return the process exit code."""
    app = create_app(settings, pids.find())
    state = app[STATE]
    reaper = asyncio.ensure_future(_reap_under_pressure(state.pids_at, log)) if state.pids_at else None
    # A client that disconnects cancels its invocation (httpserver); the close at the end
    # gives running answers only a short grace, because the drain grace has been waited out.
    server: HttpServer | None = None
    try:
        try:
            server = await start_server(app, settings.host, settings.port)
        except OSError as exc:
            log.error("cannot listen", extra={"host": settings.host, "port": settings.port,
                                              "error": f"{type(exc).__name__}: {exc}"})
            return EXIT_LISTEN
        # instance_key false: /invoke answers anyone who reaches the port (the runtime run by hand)
        log.info("start", extra={"host": settings.host, "port": settings.port, "pid": os.getpid(),
                                 "handler": settings.handler, "concurrency": settings.concurrency,
                                 "timeout": settings.timeout, "instance_key": bool(settings.instance_key)})
        t0 = time.monotonic()
        loading = _import_in_thread(settings)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            exc = loading.exception()
            if exc is not None:
                # The structured start-failure line: the worker reads "error" from it when the
                # container exits before it was ready (wire.StartFailure).
                log.error("handler import failed", extra={
                    "event": StartFailure.IMPORT_FAILED, "handler": settings.handler,
                    "error": describe(exc, settings.code_dir, settings.handler)})
                traceback.print_exception(exc)  # to stderr, for the function's author
                stopping.cancel()
                return EXIT_IMPORT
            state.invoker = Invoker(loading.result(), function=settings.function,
                                    concurrency=settings.concurrency, timeout=settings.timeout,
                                    max_body=settings.max_body, log=log)
            state.phase = "ready"
            # the ready report (wire.is_ready_line): written once /healthz answers 200
            log.info(READY_MSG, extra={"import_ms": round((time.monotonic() - t0) * 1000, 3)})
            await stopping
        else:
            loading.cancel()
        state.phase = "draining"
        inv = state.invoker
        log.info("draining", extra={"inflight": inv.inflight if inv else 0, "grace": settings.drain_grace})
        drain_end = time.monotonic() + settings.drain_grace
        if inv is not None and not await inv.wait_idle(settings.drain_grace):
            log.warning("drain grace elapsed; cancelling what is left",
                        extra={"inflight": inv.inflight, "stuck": inv.stuck})
        await _linger(state, drain_end)
        return EXIT_OK
    finally:
        if reaper is not None:
            reaper.cancel()
        if server is not None:
            await server.close()
        app.close()
        log.info("stopped")


# A gateway that routed a request here before it learned of the drain must get the
# retryable 503 draining, not a connection closed under a request it already wrote (which it
# must answer 502 outcome-unknown: it cannot tell that from a handler that crashed).  So
# once idle the listener stays open until no request has arrived for LINGER seconds.
LINGER = 0.5


async def _linger(state: State, deadline: float) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - max(start, state.last_request) < LINGER:
        await asyncio.sleep(0.05)


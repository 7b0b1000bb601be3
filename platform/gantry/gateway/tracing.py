"""Traces of invocations (docs/tracing.md): OpenTelemetry spans exported over OTLP/HTTP when
GANTRY_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT) is set; otherwise nothing at all.

Off, ``app[TRACER]`` is None and ``begin`` returns None: the request path makes no span
object and imports no OpenTelemetry (each call site checks ``trace is not None``).

On, one request is one ``Trace``: the ``invoke`` span (a child of the caller's
``traceparent`` when it sent a valid one), ``admission`` (rate limit, the name's
authorisation, the tenant's quota), ``cold_wait`` (waiting for a free instance slot), one
``forward`` per instance tried, and under the forward that answered, ``handler``: the
runtime's own span.  The runtime has no OpenTelemetry; it gets a ``traceparent`` naming the
forward span, picks its span id, measures its start and duration and reports them in
``X-Gantry-Span`` (gantry_runtime.wire); the gateway records that span here with the
runtime's id, so ``ctx.span_id`` in the handler is the exported span's id.
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Awaitable, TypeVar

from aiohttp import web
from gantry_runtime import wire

from .appkeys import SETTINGS
from .settings import GatewaySettings, SettingsError, traces_url

T = TypeVar("T")
SERVICE_NAME = "gantry-gateway"
ZERO_TRACE, ZERO_SPAN = "0" * 32, "0" * 16


class Tracer:
    """The OpenTelemetry SDK set up for one gateway: a provider (not the process-global one)
    that records what ``begin`` sampled, and a batching OTLP/HTTP exporter (spans leave on the
    SDK's own thread, never on the request path)."""

    def __init__(self, settings: GatewaySettings, exporter: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
            from opentelemetry import trace as api
            from opentelemetry.trace.status import Status, StatusCode
            if exporter is None:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
        except ImportError as exc:
            raise SettingsError(f"GANTRY_OTLP_ENDPOINT is set but the OpenTelemetry SDK is missing ({exc}); "
                                "install it with: pip install 'gantry[tracing]'") from None

        class Ids(RandomIdGenerator):
            """Random ids, except the handler span's, which the runtime chose."""
            given: int | None = None

            def generate_span_id(self) -> int:
                span_id, self.given = self.given, None
                return span_id if span_id is not None else super().generate_span_id()

        self.api, self.Status, self.StatusCode = api, Status, StatusCode
        self.ids = Ids()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": SERVICE_NAME, "service.instance.id": settings.gateway_id}),
            # begin() makes the ratio decision before any span: what reaches the SDK is sampled
            sampler=ParentBased(ALWAYS_ON), id_generator=self.ids)
        self.ratio = settings.trace_sample_ratio   # begin() decides with it before any span is made
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("gantry.gateway")

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter's timeout) and stop."""
        self.provider.shutdown()


TRACER = web.AppKey("tracer", Tracer)   # None when tracing is off
if hasattr(web, "RequestKey"):   # aiohttp >= 3.12
    TRACE = web.RequestKey("trace", object)
else:  # pragma: no cover
    TRACE = "gantry.trace"  # type: ignore[assignment]


async def tracing_ctx(app: web.Application):
    settings = app[SETTINGS]
    tracer = app[TRACER] = Tracer(settings) if settings.otlp_endpoint else None
    yield
    if tracer is not None:
        await asyncio.to_thread(tracer.shutdown)


def begin(request: web.Request) -> "Trace | Unsampled | None":
    """The request's trace, or None when tracing is off (the only cost then: this call).  The
    sampling decision comes first, here, as the SDK's parent-based ratio sampler would make
    it: a request that will not be recorded gets an ``Unsampled``, which makes no
    OpenTelemetry object and draws no span id (a non-recording span per request cost as much
    as recording a few: the bench's observability section)."""
    tracer = request.app[TRACER]
    if tracer is None:
        return None
    raw = request.headers.get(wire.TRACEPARENT)
    parent = None if raw is None else wire.parse_traceparent(raw)
    if parent is None:
        trace: Trace | Unsampled = Trace(tracer, request) if random.random() < tracer.ratio else Unsampled(None)
    elif parent.flags & 1:
        trace = Trace(tracer, request)
    else:
        # the caller's version-00 traceparent as it came, a later version's in version 00
        trace = Unsampled(raw if raw.startswith("00") else
                          wire.format_traceparent(parent.trace_id, parent.parent_id, parent.flags))
    request[TRACE] = trace
    return trace


class Unsampled:
    """A request outside the sample: no spans.  The handler still gets a ``traceparent`` with
    the sampled flag clear, so ``ctx.trace_id`` is always set: the caller's own (its span
    stays the parent: the gateway records none between), or without one a new trace id and
    parent id, drawn from ``random`` (ids, not secrets; os.urandom is a system call).  The
    runtime reports no ``X-Gantry-Span`` for it.  gateway.invoke calls only ``propagate``,
    ``admit`` and ``end`` on it."""

    __slots__ = ("traceparent",)
    sampled = False

    def __init__(self, traceparent: str | None) -> None:
        if traceparent is None:
            ids = random.getrandbits(192).to_bytes(24, "big").hex()   # (a format spec costs more)
            if ids.startswith(ZERO_TRACE) or ids.endswith(ZERO_SPAN):   # all-zero ids are invalid
                ids = "1" * 48
            traceparent = f"00-{ids[:32]}-{ids[32:]}-00"
        self.traceparent = traceparent

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    def admit(self) -> None:
        pass

    def propagate(self, headers: dict[str, str]) -> None:
        """The handler's ``traceparent`` (the request path awaits the forward itself: no
        wrapping coroutine outside the sample)."""
        headers[wire.TRACEPARENT] = self.traceparent

    def end(self, status: int, function: str | None) -> None:
        pass


def caller_context(tracer: Tracer, raw: str | None):
    """The OpenTelemetry context of the caller's ``traceparent``; None (a new trace) when it
    sent none or an invalid one."""
    parent = wire.parse_traceparent(raw)
    if parent is None:
        return None
    api = tracer.api
    span = api.NonRecordingSpan(api.SpanContext(int(parent.trace_id, 16), int(parent.parent_id, 16),
                                                is_remote=True, trace_flags=api.TraceFlags(parent.flags & 1)))
    return api.set_span_in_context(span)


class Trace:
    """One sampled invocation's spans (``begin`` makes an ``Unsampled`` for the others)."""

    __slots__ = ("tracer", "span", "context", "started", "admitted")
    sampled = True

    def __init__(self, tracer: Tracer, request: web.Request) -> None:
        self.tracer = tracer
        self.started = time.time_ns()
        self.span = tracer.tracer.start_span(
            "invoke", caller_context(tracer, request.headers.get(wire.TRACEPARENT)),
            kind=tracer.api.SpanKind.SERVER, start_time=self.started,
            attributes={"http.request.method": request.method, "url.path": request.path})
        self.context = tracer.api.set_span_in_context(self.span)
        self.admitted = False

    def _error(self, span, why: str) -> None:
        span.set_status(self.tracer.Status(self.tracer.StatusCode.ERROR, why))

    def _child(self, name: str, start: int, end: int, error: str | None = None, **attributes) -> None:
        span = self.tracer.tracer.start_span(name, self.context, start_time=start, attributes=attributes)
        if error is not None:
            self._error(span, error)
        span.end(end)

    def admit(self) -> None:
        """The request passed admission: its span runs from the request's start to now."""
        self.admitted = True
        self._child("admission", self.started, time.time_ns())

    async def cold_wait(self, waiting: Awaitable[T], function: str) -> T:
        """Await ``waiting`` (gateway.invoke.wait_for_slot) inside a ``cold_wait`` span."""
        start, error, ticket = time.time_ns(), None, None
        try:
            ticket = await waiting
            return ticket
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            self._child("cold_wait", start, time.time_ns(), error or (None if ticket else "no free slot"),
                        **{"gantry.function": function, "gantry.got_slot": ticket is not None})

    async def forward(self, forwarding: Awaitable[web.StreamResponse], headers: dict[str, str],
                      instance: str) -> web.StreamResponse:
        """Await ``forwarding`` (gateway.invoke._forward, not yet started, sending ``headers``)
        inside a ``forward`` span whose id the runtime gets as the ``traceparent``'s parent,
        then record the runtime's ``handler`` span under it."""
        api = self.tracer.api
        inv_id = headers.get(wire.INVOCATION_ID, "")
        span = self.tracer.tracer.start_span("forward", self.context, kind=api.SpanKind.CLIENT, attributes={
            "gantry.instance": instance, "gantry.invocation_id": inv_id})
        ctx = span.get_span_context()
        headers[wire.TRACEPARENT] = wire.format_traceparent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
                                                            int(ctx.trace_flags))
        resp = None
        try:
            resp = await forwarding
            return resp
        except BaseException as exc:
            self._error(span, getattr(exc, "reason", None) or getattr(exc, "code", None) or type(exc).__name__)
            raise
        finally:
            end = time.time_ns()
            if resp is not None:
                span.set_attribute("http.response.status_code", resp.status)
                if resp.status >= 500:
                    self._error(span, f"status {resp.status}")
                self._handler(span, resp, end, instance, inv_id)
            span.end(end)

    def _handler(self, forward, resp: web.StreamResponse, forward_end: int, instance: str, inv_id: str) -> None:
        report = wire.parse_span(resp.headers.get(wire.SPAN))
        if report is None:
            return
        start = forward.start_time
        # The runtime's clock may differ from ours (another node): its duration is exact, its
        # start is placed inside the forward span.  A stream's span ends with the forward.
        duration = forward_end - start if report.duration_ns is None else min(report.duration_ns, forward_end - start)
        begin = min(max(report.start_ns, start), forward_end - duration)
        self.tracer.ids.given = int(report.span_id, 16)
        span = self.tracer.tracer.start_span(
            "handler", self.tracer.api.set_span_in_context(forward), kind=self.tracer.api.SpanKind.SERVER,
            start_time=begin, attributes={"gantry.instance": instance, "gantry.invocation_id": inv_id,
                                          "gantry.streamed": report.duration_ns is None})
        self.tracer.ids.given = None
        if resp.status >= 500:
            self._error(span, f"status {resp.status}")
        span.end(begin + duration)

    def end(self, status: int, function: str | None) -> None:
        """The request's answer: close the ``invoke`` span (and a refused admission's)."""
        span = self.span
        end = time.time_ns()
        if not self.admitted and status in (403, 429):
            self._child("admission", self.started, end, f"status {status}")
        span.set_attribute("http.response.status_code", status)
        if function is not None:
            span.set_attribute("gantry.function", function)
        if status >= 500:
            self._error(span, f"status {status}")
        span.end()

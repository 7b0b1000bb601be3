"""Traces (docs/tracing.md): a real gateway exporting over OTLP/HTTP to a receiver started
here, forwarding to a real runtime process; the spans are decoded with opentelemetry-proto."""
from __future__ import annotations

import asyncio
import gzip

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                        ExportTraceServiceResponse)

from gantry.gateway import GatewaySettings
from gantry.gateway.cache import Entry
from gantry.gateway.appkeys import CACHE
from gantry.gateway.settings import SettingsError, sample_ratio, traces_url
from gantry.gateway.tracing import TRACER

from .support import AUTH, add_instance, gateway, register_function

pytestmark = pytest.mark.timeout(60)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf; keeps every span with its
    resource's attributes."""

    def __init__(self) -> None:
        self.spans: list = []
        self.resources: list[dict] = []
        self.server: TestServer | None = None

    async def export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        for rs in msg.resource_spans:
            self.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def named(self, name: str) -> list:
        return [s for s in self.spans if s.name == name]


@pytest.fixture
async def otlp():
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.export)
    receiver.server = TestServer(app, host="127.0.0.1")
    await receiver.server.start_server()
    yield receiver
    await receiver.server.close()


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value or v.int_value or v.bool_value
    return out


async def _until_waiting(app, timeout: float = 5.0) -> None:
    """Until a request waits for an instance slot (bounded)."""
    async with asyncio.timeout(timeout):
        while not any(isinstance(e, Entry) and e.load.waiting for e in app[CACHE].entries.values()):
            await asyncio.sleep(0.01)


async def test_a_real_invocation_is_one_trace_from_the_callers_span_to_the_handler(
        redis_url, redis_client, runtimes, otlp):
    rt = runtimes.get("main:traced")
    register_function(redis_client, "traced")
    async with gateway(redis_url, otlp_endpoint=otlp.url + "/v1/traces") as client:
        app = client.server.app
        # cold: the request waits for an instance, which appears while it waits
        call = asyncio.create_task(client.post("/v1/invoke/traced", json={}, headers={
            **AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}))
        await _until_waiting(app)
        add_instance(redis_client, "traced", rt.port)
        resp = await call
        assert resp.status == 200, await resp.text()
        seen = await resp.json()
        inv_id = resp.headers["X-Gantry-Invocation-Id"]
        # warm, with no traceparent: a new trace, still handed to the handler
        resp2 = await client.post("/v1/invoke/traced", json={}, headers=AUTH)
        assert resp2.status == 200
        seen2 = await resp2.json()
    # the gateway's shutdown exported what it had queued

    assert seen["trace_id"] == CALLER_TRACE
    ours = [s for s in otlp.spans if s.trace_id.hex() == CALLER_TRACE]
    assert sorted(s.name for s in ours) == ["admission", "cold_wait", "forward", "handler", "invoke"]
    by = {s.name: s for s in ours}
    invoke, handler, forward = by["invoke"], by["handler"], by["forward"]
    assert invoke.parent_span_id.hex() == CALLER_SPAN        # the caller's span is its parent
    for name in ("admission", "cold_wait", "forward"):
        assert by[name].parent_span_id == invoke.span_id, name
    assert handler.parent_span_id == forward.span_id         # the handler runs under the forward
    assert handler.span_id.hex() == seen["span_id"]          # the span the handler saw is the one exported
    assert forward.start_time_unix_nano <= handler.start_time_unix_nano
    assert handler.end_time_unix_nano <= forward.end_time_unix_nano
    assert invoke.start_time_unix_nano <= by["cold_wait"].start_time_unix_nano
    assert by["cold_wait"].end_time_unix_nano <= forward.start_time_unix_nano <= invoke.end_time_unix_nano
    assert attrs(invoke)["http.response.status_code"] == 200 and attrs(invoke)["gantry.function"] == "traced"
    assert attrs(forward)["gantry.invocation_id"] == inv_id == attrs(handler)["gantry.invocation_id"]
    assert attrs(by["cold_wait"])["gantry.got_slot"] is True
    assert {"service.name": "gantry-gateway"}.items() <= otlp.resources[0].items()

    new = [s for s in otlp.spans if s.trace_id.hex() == seen2["trace_id"]]
    assert seen2["trace_id"] != CALLER_TRACE
    assert sorted(s.name for s in new) == ["admission", "forward", "handler", "invoke"]   # warm: no cold wait
    assert [s.parent_span_id for s in new if s.name == "invoke"] == [b""]                 # a root span
    assert len(otlp.spans) == 9


async def test_a_refused_invocation_has_a_failed_admission_span(redis_url, otlp):
    async with gateway(redis_url, otlp_endpoint=otlp.url, rate_limit=0.001, rate_burst=1) as client:
        assert (await client.post("/v1/invoke/none", json={}, headers=AUTH)).status == 404
        assert (await client.post("/v1/invoke/none", json={}, headers=AUTH)).status == 429
    refused = [s for s in otlp.named("admission") if s.status.code == s.status.STATUS_CODE_ERROR]
    assert len(refused) == 1 and len(otlp.named("admission")) == 2
    assert sorted(attrs(s)["http.response.status_code"] for s in otlp.named("invoke")) == [404, 429]


async def test_unsampled_the_handler_still_gets_the_trace_and_nothing_is_exported(
        redis_url, redis_client, runtimes, otlp):
    rt = runtimes.get("main:traced")
    register_function(redis_client, "traced")
    add_instance(redis_client, "traced", rt.port)
    async with gateway(redis_url, otlp_endpoint=otlp.url, trace_sample_ratio=0.0) as client:
        resp = await client.post("/v1/invoke/traced", json={}, headers=AUTH)
        seen = await resp.json()
        # a caller that sampled its trace wins over the ratio
        resp = await client.post("/v1/invoke/traced", json={}, headers={
            **AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        assert resp.status == 200
    assert len(seen["trace_id"]) == 32 and int(seen["trace_id"], 16)
    assert {s.trace_id.hex() for s in otlp.spans} == {CALLER_TRACE}


async def test_unsampled_the_runtime_reports_no_span_and_the_callers_traceparent_goes_on(
        redis_url, redis_client, runtimes, otlp):
    rt = runtimes.get("main:traced")
    register_function(redis_client, "traced")
    add_instance(redis_client, "traced", rt.port)
    async with gateway(redis_url, otlp_endpoint=otlp.url, trace_sample_ratio=0.0) as client:
        new = await client.post("/v1/invoke/traced", json={}, headers=AUTH)
        assert new.status == 200 and "X-Gantry-Span" not in new.headers   # a new trace, unsampled
        first = await new.json()
        mine = await (await client.post("/v1/invoke/traced", json={}, headers=AUTH)).json()
        caller = await client.post("/v1/invoke/traced", json={}, headers={
            **AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"})
        assert caller.status == 200 and "X-Gantry-Span" not in caller.headers
        seen = await caller.json()
    assert seen["trace_id"] == CALLER_TRACE and len(seen["span_id"]) == 16
    assert len(mine["trace_id"]) == 32 and mine["trace_id"] != first["trace_id"]
    assert otlp.spans == []


async def test_off_nothing_is_traced_but_the_callers_traceparent_reaches_the_handler(
        redis_url, redis_client, runtimes):
    rt = runtimes.get("main:traced")
    register_function(redis_client, "traced")
    add_instance(redis_client, "traced", rt.port)
    async with gateway(redis_url) as client:
        assert client.server.app[TRACER] is None
        resp = await client.post("/v1/invoke/traced", json={}, headers={
            **AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        seen = await resp.json()
        assert seen["trace_id"] == CALLER_TRACE and len(seen["span_id"]) == 16
        # the runtime's report of its span reaches the caller, for its own tracing
        span_id, start, duration = resp.headers["X-Gantry-Span"].split(";")
        assert span_id == seen["span_id"] and int(start) > 0 and int(duration) > 0
        # a caller's unsampled trace: the handler has it, no span report comes back
        resp = await client.post("/v1/invoke/traced", json={}, headers={
            **AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"})
        assert (await resp.json())["trace_id"] == CALLER_TRACE and "X-Gantry-Span" not in resp.headers
        resp = await client.post("/v1/invoke/traced", json={}, headers={**AUTH, "traceparent": "ff-junk"})
        assert await resp.json() == {"trace_id": None, "span_id": None}
        assert "X-Gantry-Span" not in resp.headers


def test_settings_of_tracing():
    env = {"GANTRY_REDIS_URL": "redis://x"}
    assert GatewaySettings.from_env(env).otlp_endpoint is None
    assert GatewaySettings.from_env({**env, "GANTRY_OTLP_ENDPOINT": "http://c:4318"}).otlp_endpoint == \
        "http://c:4318/v1/traces"
    assert GatewaySettings.from_env({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318/"}).otlp_endpoint == \
        "http://o:4318/v1/traces"
    assert GatewaySettings.from_env({**env, "GANTRY_OTLP_ENDPOINT": "https://g/v1/traces",
                                     "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"}).otlp_endpoint == \
        "https://g/v1/traces"
    assert GatewaySettings.from_env({**env, "GANTRY_TRACE_SAMPLE_RATIO": "0.25"}).trace_sample_ratio == 0.25
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces/"
    assert sample_ratio("0") == 0.0 and sample_ratio("1") == 1.0
    with pytest.raises(SettingsError, match="GANTRY_OTLP_ENDPOINT: expected an http"):
        GatewaySettings.from_env({**env, "GANTRY_OTLP_ENDPOINT": "collector:4318"})
    for bad in ("1.5", "-0.1", "half", "nan"):
        with pytest.raises(SettingsError, match="GANTRY_TRACE_SAMPLE_RATIO: expected a number from 0 to 1"):
            GatewaySettings.from_env({**env, "GANTRY_TRACE_SAMPLE_RATIO": bad})


def test_the_ratio_samples_that_share_of_new_traces_and_a_callers_flag_wins():
    """begin() decides before any span is made; what it sends to the SDK is recorded."""
    from aiohttp.test_utils import make_mocked_request
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from gantry.gateway.tracing import TRACER, Trace, Tracer, Unsampled, begin

    def traces(ratio: float, n: int, traceparent: str | None = None) -> list:
        settings = GatewaySettings(redis_url="redis://127.0.0.1:1", otlp_endpoint="http://127.0.0.1:1/v1/traces",
                                   trace_sample_ratio=ratio)
        tracer = Tracer(settings, exporter=InMemorySpanExporter())
        app = web.Application()
        app[TRACER] = tracer
        headers = {"traceparent": traceparent} if traceparent else {}
        out = [begin(make_mocked_request("POST", "/v1/invoke/f", headers=headers, app=app)) for _ in range(n)]
        tracer.shutdown()
        return out

    sampled = [t for t in traces(0.25, 2000) if isinstance(t, Trace)]
    assert 400 <= len(sampled) <= 600 and all(t.span.is_recording() for t in sampled)   # binomial: 500 +- 19
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8
    assert all(isinstance(t, Unsampled) and t.trace_id == "ab" * 16 for t in traces(1.0, 5, caller + "-00"))
    assert all(isinstance(t, Trace) and t.span.is_recording() for t in traces(0.0, 5, caller + "-01"))

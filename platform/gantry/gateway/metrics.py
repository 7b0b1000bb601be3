"""The gateway's metrics: Prometheus counters, gauges and histograms for ``/metrics``
(prometheus_client, one CollectorRegistry per app), and the per-minute rows of each function
and tenant (gantry.metrics) that the metrics API reads.

Recording costs the request path no Redis round trip: ``invoke`` and the dispatcher make one
call each into ``Metrics`` (a few dict updates and a histogram observe), and ``metrics_ctx``
samples in-flight and instance counts every second and adds the rows gathered to Redis every
GANTRY_METRICS_FLUSH_INTERVAL (5 s) and once more at shutdown, in one script
(keys.METRICS_ADD).  A flush that fails puts its rows back, as the usage flush does.
GANTRY_METRICS=0 turns the rows and histograms off (the counters stay: they cost a dict update).
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..metrics.model import Rows
from ..metrics.store import MetricsStore
from ..tenants.model import qualify, split
from .background import flushing
from .errors import ApiError

disable_created_metrics()   # no *_created series: start times Prometheus does not need here

UNKNOWN = "_unknown"   # requests for names that are not deployed share one label value
SAMPLE_EVERY = 1.0     # seconds between samples of in-flight and instance counts
# Prometheus buckets (seconds): its histograms aggregate in Prometheus, by its own rules; the
# per-minute rows use gantry.metrics.histogram's finer ladder.
DURATION_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Counters(Collector):
    """The counters and gauges kept as plain dicts on the request path, read at scrape time."""

    def __init__(self, metrics: "Metrics") -> None:
        self.m = metrics

    def collect(self):
        m = self.m
        fam = CounterMetricFamily("gantry_gateway_requests", "Invocations answered, by function and status.",
                                  labels=("function", "status"))
        for (fn, status), n in sorted(m.requests.items()):
            fam.add_metric((fn, str(status)), n)
        yield fam
        for name, help_text, counter in (
                ("cold_waits", "Invocations that waited for a free instance.", m.cold_waits),
                ("retries", "Forwards retried on another instance.", m.retries),
                ("stream_aborts", "Responses aborted after the headers were sent.", m.upstream_aborts),
                ("tokens_in", "Prompt tokens of a vLLM function's answers (their usage object).", m.tokens_in),
                ("tokens_out", "Completion tokens of a vLLM function's answers (their usage object).",
                 m.tokens_out)):
            fam = CounterMetricFamily(f"gantry_gateway_{name}", help_text, labels=("function",))
            for fn, n in sorted(counter.items()):
                fam.add_metric((fn,), n)
            yield fam
        for name, help_text, gauge in (
                ("inflight", "Invocations being forwarded now.", m.gauges[0]),
                ("waiting", "Invocations waiting for a free instance now.", m.gauges[1])):
            fam = GaugeMetricFamily(f"gantry_gateway_{name}", help_text, labels=("function",))
            for fn, n in sorted(gauge.items()):
                fam.add_metric((fn,), n)
            yield fam


class _Histogram:
    """A labelled prometheus_client Histogram with its children cached by function (labels()
    validates and locks on every call; the request path looks a dict up instead)."""

    def __init__(self, name: str, help_text: str, registry: CollectorRegistry) -> None:
        self.h = Histogram(name, help_text, ("function",), registry=registry, buckets=DURATION_BUCKETS)
        self.children: dict[str, Histogram] = {}

    def observe(self, function: str, seconds: float) -> None:
        child = self.children.get(function)
        if child is None:
            child = self.children[function] = self.h.labels(function)
        child.observe(seconds)


class Metrics:
    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.enabled, self.clock = enabled, clock
        self.requests: Counter[tuple[str, int]] = Counter()   # (function, status)
        self.cold_waits: Counter[str] = Counter()             # requests that waited for an instance
        self.retries: Counter[str] = Counter()                # forwards retried on another instance
        self.upstream_aborts: Counter[str] = Counter()        # streams broken after the headers
        self.tokens_in: Counter[str] = Counter()              # vLLM functions: prompt tokens
        self.tokens_out: Counter[str] = Counter()             # ... and completion tokens
        self.gauges: tuple[dict[str, int], dict[str, int]] = ({}, {})   # set at each scrape
        self.rows = Rows()                                    # per-minute rows until the next flush
        self.registry = CollectorRegistry(auto_describe=True)  # per app: tests run several apps
        self.registry.register(_Counters(self))
        self.duration = _Histogram("gantry_gateway_request_duration_seconds",
                                   "Invocation time in the gateway, from the request to the answer's end.",
                                   self.registry)
        self.forward = _Histogram("gantry_gateway_forward_duration_seconds",
                                  "Time of one forward to an instance, from sending to the answer's end.",
                                  self.registry)
        self.cold = _Histogram("gantry_gateway_cold_start_wait_seconds",
                               "Time an invocation waited for a free instance.", self.registry)

    # --- recording (the request path: no I/O) --------------------------------------------------

    def observe(self, tenant: str, name: str, found: bool, status: int, seconds: float) -> None:
        """A finished invoke request, as gantry.gateway.usage.Meter.observe sees it.  An error's
        code is the gateway's ApiError being raised, if any (read here, so the caller's
        finally block needs no except clause for it)."""
        if not self.enabled:
            return
        code = None
        if status >= 500:
            exc = sys.exc_info()[1]
            code = exc.code if isinstance(exc, ApiError) else None
        self.rows.invocation(int(self.clock() // 60), tenant, name, found, status, seconds, code)
        if found:
            self.duration.observe(qualify(tenant, name), seconds)

    def attempt(self, function: str, status: int, code: str, seconds: float) -> None:
        """An async attempt of FUNCTION (qualified) that ended with STATUS and CODE."""
        if self.enabled:
            tenant, name = split(function)
            self.rows.invocation(int(self.clock() // 60), tenant, name, True, status, seconds,
                                 code or None, attempt=True)

    def tokens(self, function: str, prompt: int, completion: int) -> None:
        """The usage of one answer of FUNCTION (qualified; gateway.openai.usage_of)."""
        self.tokens_in[function] += prompt
        self.tokens_out[function] += completion
        if self.enabled:
            self.rows.tokens(int(self.clock() // 60), *split(function), prompt, completion)

    def cold_wait_started(self, function: str) -> float:
        self.cold_waits[function] += 1
        return time.monotonic()

    def cold_wait_ended(self, function: str, started: float) -> None:
        if self.enabled:
            seconds = time.monotonic() - started
            self.cold.observe(function, seconds)
            self.rows.cold_wait(int(self.clock() // 60), *split(function), seconds)

    def forwarded(self, function: str, started: float) -> None:
        if self.enabled:
            self.forward.observe(function, time.monotonic() - started)

    def sample(self, entries) -> None:
        """In-flight and ready-instance counts of the functions this gateway knows, now."""
        gauges = [(*split(e.name), e.load.inflight, e.routing.balancer.ready)
                  for e in entries if e.known.exists]
        self.rows.sample(int(self.clock() // 60), gauges)

    # --- /metrics -------------------------------------------------------------------------------

    def render(self, inflight: dict[str, int], waiting: dict[str, int]) -> str:
        self.gauges = (inflight, waiting)
        return generate_latest(self.registry).decode()


# --- the flush --------------------------------------------------------------------------------

class MetricsFlusher:
    def __init__(self, metrics: Metrics, store: MetricsStore, retention: float) -> None:
        self.metrics, self.store, self.retention = metrics, store, retention

    async def _iteration(self) -> None:
        """Write the rows gathered since the last flush; on failure keep them."""
        taken = self.metrics.rows.take()
        if not taken:
            return
        try:
            await self.store.add(taken, self.retention)
        except BaseException:
            self.metrics.rows.put_back(taken)
            raise


FLUSHER = web.AppKey("metrics_flusher", MetricsFlusher)


async def metrics_ctx(app: web.Application):
    """The sampler and flush loop (none with GANTRY_METRICS=0); a last flush at shutdown,
    before Redis is closed (this context is set up after the Redis client's)."""
    from .appkeys import CACHE, METRICS, REDIS, SETTINGS
    settings, metrics = app[SETTINGS], app[METRICS]
    if not settings.metrics:
        yield
        return
    flusher = app[FLUSHER] = MetricsFlusher(metrics, MetricsStore(app[REDIS]), settings.metrics_retention)

    def sample() -> None:
        cache = app.get(CACHE)
        if cache is not None:
            metrics.sample(cache.entries.values())

    async with flushing(flusher._iteration, settings.metrics_flush_interval, "metrics",
                        lambda: {"rows": len(metrics.rows.rows)}, tick=sample, tick_every=SAMPLE_EVERY):
        yield

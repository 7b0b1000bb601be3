"""The gateway's metrics: Prometheus counters, gauges and histograms for ``/metrics``, and the
per-minute rows of each function and tenant (gantry.metrics) that the metrics API reads.

Recording costs the request path no Redis round trip and no prometheus_client object:
``invoke`` calls ``Metrics.finished`` once per finished request (and ``forwarded`` once per
forward), which adds to plain dicts and lists: the status counter, the usage meter
(gateway.usage), the minute's row, and a bucket array per function and histogram.  At scrape
time one Collector turns them into the /metrics families (``HistogramMetricFamily`` for the
histograms, built from the bucket arrays).  ``metrics_ctx`` samples in-flight and instance
counts every second and adds the rows gathered to Redis every GANTRY_METRICS_FLUSH_INTERVAL
(5 s) and once more at shutdown, in one script (keys.METRICS_ADD).  A flush that fails puts
its rows back, as the usage flush does.  GANTRY_METRICS=0 turns the rows and histograms off
(the counters and usage stay: they cost a dict update each).
"""
from __future__ import annotations

import sys
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..metrics.histogram import BOUNDS
from ..metrics.model import BUCKET_FIELDS, DURATION_US, INVOCATIONS, Rows
from ..metrics.store import MetricsStore
from ..tenants.model import split
from .background import flushing
from .errors import ApiError

UNKNOWN = "_unknown"   # requests for names that are not deployed share one label value
SAMPLE_EVERY = 1.0     # seconds between samples of in-flight and instance counts
MAX_SLOTS = 10_000     # Metrics.finished's per-function shortcuts kept at most (then dropped, remade)
_monotonic = time.monotonic
# Prometheus buckets (seconds): its histograms aggregate in Prometheus, by its own rules; the
# per-minute rows use gantry.metrics.histogram's finer ladder.
DURATION_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)


# A histogram of one function: the count of each DURATION_BUCKETS bucket (an observation
# equal to a bound counts in that bound's bucket, Prometheus's "le"), then +Inf's, then the sum.
_BUCKETS = len(DURATION_BUCKETS) + 1
_LE = tuple(floatToGoString(b) for b in DURATION_BUCKETS) + ("+Inf",)
HISTOGRAMS = (   # Metrics attribute, /metrics name, help
    ("duration", "gantry_gateway_request_duration_seconds",
     "Invocation time in the gateway, from the request to the answer's end."),
    ("forward", "gantry_gateway_forward_duration_seconds",
     "Time of one forward to an instance, from sending to the answer's end."),
    ("cold", "gantry_gateway_cold_start_wait_seconds", "Time an invocation waited for a free instance."))


def _observe(histogram: dict[str, list], function: str, seconds: float) -> None:
    counts = histogram.get(function)
    if counts is None:
        counts = histogram[function] = [0] * _BUCKETS + [0.0]
    counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
    counts[-1] += seconds


def histogram_family(name: str, help_text: str, histogram: dict[str, list]) -> HistogramMetricFamily:
    """The /metrics family of a histogram kept by ``_observe``: cumulative buckets per function,
    in the order the functions were first observed (as prometheus_client's Histogram wrote them)."""
    fam = HistogramMetricFamily(name, help_text, labels=("function",))
    for fn, counts in histogram.items():
        acc, buckets = 0, []
        for le, n in zip(_LE, counts):
            acc += n
            buckets.append((le, acc))
        fam.add_metric((fn,), buckets, counts[-1])
    return fam


class _Collector(Collector):
    """Everything /metrics serves, read at scrape time from the plain dicts and lists that the
    request path updates."""

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
        for attr, name, help_text in HISTOGRAMS:
            yield histogram_family(name, help_text, getattr(m, attr))


class _Slot:
    """Where a deployed function's finished requests of one minute are counted (Metrics.finished):
    its usage row, its row of the minute, its duration histogram.  Valid while the meter's and
    the rows' dicts are the ones it was made from (each flush takes them) and the minute lasts."""

    __slots__ = ("start", "end", "counts", "rows", "usage", "row", "duration")

    def __init__(self, minute: int, counts: dict, rows: dict, usage: list, row: dict, duration: list) -> None:
        self.start, self.end = minute * 60, (minute + 1) * 60   # the minute, in the clock's seconds
        self.counts, self.rows = counts, rows
        self.usage, self.row, self.duration = usage, row, duration


class Metrics:
    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.time) -> None:
        from .usage import Meter    # here: gateway.usage imports appkeys, which imports this module
        self.enabled, self.clock = enabled, clock
        self.requests: Counter[tuple[str, int]] = Counter()   # (function, status)
        self.cold_waits: Counter[str] = Counter()             # requests that waited for an instance
        self.retries: Counter[str] = Counter()                # forwards retried on another instance
        self.upstream_aborts: Counter[str] = Counter()        # streams broken after the headers
        self.tokens_in: Counter[str] = Counter()              # vLLM functions: prompt tokens
        self.tokens_out: Counter[str] = Counter()             # ... and completion tokens
        self.gauges: tuple[dict[str, int], dict[str, int]] = ({}, {})   # set at each scrape
        self.meter = Meter()                                  # usage (app[usage.METER]): always on
        self.rows = Rows()                                    # per-minute rows until the next flush
        # per function: its histogram's bucket counts and sum (_observe), since the gateway started
        self.duration: dict[str, list] = {}
        self.forward: dict[str, list] = {}
        self.cold: dict[str, list] = {}
        self._slots: dict[str, _Slot] = {}                    # per qualified function: Metrics.finished
        self.registry = CollectorRegistry(auto_describe=True)  # per app: tests run several apps
        self.registry.register(_Collector(self))

    # --- recording (the request path: no I/O) --------------------------------------------------

    def finished(self, label: str, status: int, started: float, metered: bool = True,
                 asked: tuple[str, str] | None = None) -> None:
        """A finished invoke request, the one call it makes here: LABEL, its function's qualified
        name (UNKNOWN when none was found); STATUS, its answer's (499 when the client went
        away); STARTED, its time.monotonic() on arrival; METERED false when it is metered
        elsewhere (an Idempotency-Key call runs as an async invocation); ASKED, for a request
        of no function found, the (tenant, bare name) usage and the rows count it under (a
        found one's are its function's: split(LABEL)).

        What it adds is what gateway.usage.Meter.observe, Rows.invocation and a histogram
        observe would add; the common case (a deployed function's answer below 429) takes a
        shortcut to the same places: the function's ``_Slot``."""
        seconds = _monotonic() - started
        self.requests[(label, status)] += 1
        if not metered:
            return
        if status < 429 and label != UNKNOWN and self.enabled:
            now = self.clock()
            slot = self._slots.get(label)
            if slot is None or not slot.start <= now < slot.end or slot.counts is not self.meter.counts \
                    or slot.rows is not self.rows.rows:
                slot = self._slot(label, int(now // 60))
            usage = slot.usage          # gateway.usage.Meter's row: [invocations, errors, throttles, seconds]
            usage[0] += 1
            usage[3] += seconds
            row = slot.row              # gantry.metrics.model.Rows's row of this minute
            row[INVOCATIONS] += 1
            row[DURATION_US] += int(seconds * 1e6 + 0.5) if seconds > 0 else 0   # model._us
            bucket = BUCKET_FIELDS[bisect_right(BOUNDS, seconds)]                  # histogram.index
            row[bucket] = row.get(bucket, 0) + 1
            hist = slot.duration        # _observe
            hist[bisect_left(DURATION_BUCKETS, seconds)] += 1
            hist[-1] += seconds
            return
        found = label != UNKNOWN
        tenant, name = split(label) if found else asked
        self.meter.observe(tenant, name, found, status, seconds)
        if not self.enabled:
            return
        code = None
        if status >= 500:   # the gateway's ApiError being raised, if any (no except clause needed)
            exc = sys.exc_info()[1]
            code = exc.code if isinstance(exc, ApiError) else None
        self.rows.invocation(int(self.clock() // 60), tenant, name, found, status, seconds, code)
        if found:
            _observe(self.duration, label, seconds)

    def _slot(self, label: str, minute: int) -> "_Slot":
        if len(self._slots) >= MAX_SLOTS:   # functions deleted since: their slots are stale anyway
            self._slots.clear()
        tenant, name = split(label)
        row = self.rows._row((minute, tenant, name))
        row.setdefault(INVOCATIONS, 0)     # set by the first request, which this slot is for
        row.setdefault(DURATION_US, 0)
        duration = self.duration.get(label)
        if duration is None:
            duration = self.duration[label] = [0] * _BUCKETS + [0.0]
        slot = self._slots[label] = _Slot(minute, self.meter.counts, self.rows.rows, self.meter._row(tenant, name),
                                          row, duration)
        return slot

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
            _observe(self.cold, function, seconds)
            self.rows.cold_wait(int(self.clock() // 60), *split(function), seconds)

    def forwarded(self, function: str, started: float) -> None:
        if self.enabled:
            seconds = _monotonic() - started
            counts = self.forward.get(function)     # _observe, inline: once per forward
            if counts is None:
                counts = self.forward[function] = [0] * _BUCKETS + [0.0]
            counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
            counts[-1] += seconds

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

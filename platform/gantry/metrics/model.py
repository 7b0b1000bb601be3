"""Per-minute metrics rows: what a gateway gathers between flushes, how the rows are laid out
in Redis, and the summaries the API answers with.  Pure: no I/O (gantry.metrics.store and
gantry.gateway.metrics do it).

A row belongs to (tenant, function, minute) and holds whole numbers only, so replicas and
minutes combine exactly by adding (HINCRBY), except the two peaks, which combine by max:

  n      invocations: requests of a deployed function past the rate limit, and async attempts
  a      of which async attempts (the dispatcher's)
  e:CODE errors (answered >= 500) by code: the gateway's error code (timeout, no_capacity,
         function_crashed...) or, for an error the function answered itself, its HTTP status
  t      throttles: 429s (the key's rate limit or the tenant's rate or concurrency quota)
  c      cold starts: requests that waited for an instance (a free slot) before being sent
  cw     microseconds waited by those requests
  d      microseconds of invocation duration in all (with the minute: average concurrency)
  b:I    invocations whose duration fell in bucket I of gantry.metrics.histogram
  ip     peak in-flight requests seen by one gateway (max over gateways and samples)
  ni     peak ready instances seen (max over gateways and samples)
  ti     tokens in: prompt tokens of a vLLM function's answers that carried a usage object
  to     tokens out: completion tokens of those answers

The tenant's row of a minute is the sum of its functions' rows; its peaks are sampled as the
tenant's sum at each sampling moment.
"""
from __future__ import annotations

import math
from typing import Any

from gantry_runtime.config import parse_duration

from . import histogram
from ..manifest import NAME_RE
from ..tenants.model import qualify

INVOCATIONS, ASYNC, THROTTLES, COLD, COLD_US, DURATION_US = "n", "a", "t", "c", "cw", "d"
ERROR, BUCKET = "e:", "b:"
INFLIGHT_PEAK, INSTANCES = "ip", "ni"
TOKENS_IN, TOKENS_OUT = "ti", "to"
PEAKS = (INFLIGHT_PEAK, INSTANCES)          # combine by max, every other field by sum
BUCKET_FIELDS = tuple(f"{BUCKET}{i}" for i in range(histogram.COUNT))
SEP = "|"                                   # stored field: "MM|FIELD", MM the minute in the hour
TENANT_ROW = ""                             # the function name of a tenant's own (peaks) row
# Throttled calls name any function they like: past this many rows between two flushes their
# throttles gather under OTHER (as gantry.gateway.usage does), so memory stays bounded.
MAX_ROWS = 10_000
OTHER = "_other"
QS = (0.5, 0.95, 0.99)

Key = tuple[int, str, str]                  # (minute since the epoch, tenant, bare function)


class MetricsError(ValueError):
    """A bad query (400): the parameter and what was wrong."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def _us(seconds: float) -> int:
    return int(seconds * 1e6 + 0.5) if seconds > 0 else 0


def error_code(status: int, code: str | None) -> str:
    return code or str(status)


class Rows:
    """What one gateway gathered since its last flush: (minute, tenant, function) -> field ->
    amount.  Each observe is a few dict updates: the request path does no I/O for metrics."""

    def __init__(self) -> None:
        self.rows: dict[Key, dict[str, int]] = {}

    def _row(self, key: Key) -> dict[str, int]:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = {}
        return row

    def invocation(self, minute: int, tenant: str, name: str, found: bool, status: int, seconds: float,
                   code: str | None = None, attempt: bool = False) -> None:
        """A finished request (or async attempt, ATTEMPT) of function NAME of TENANT; FOUND:
        it was deployed (else only a 429 counts, under the name asked for); CODE: the
        gateway's error code if it raised one."""
        if status == 429:
            if found or NAME_RE.match(name):
                if (minute, tenant, name) not in self.rows and len(self.rows) >= MAX_ROWS:
                    name = OTHER
                row = self._row((minute, tenant, name))
                row[THROTTLES] = row.get(THROTTLES, 0) + 1
            return
        if not found:
            return
        row = self._row((minute, tenant, name))
        row[INVOCATIONS] = row.get(INVOCATIONS, 0) + 1
        row[DURATION_US] = row.get(DURATION_US, 0) + _us(seconds)
        bucket = BUCKET_FIELDS[histogram.index(seconds)]
        row[bucket] = row.get(bucket, 0) + 1
        if attempt:
            row[ASYNC] = row.get(ASYNC, 0) + 1
        if status >= 500:
            field = ERROR + error_code(status, code)
            row[field] = row.get(field, 0) + 1

    def cold_wait(self, minute: int, tenant: str, name: str, seconds: float) -> None:
        row = self._row((minute, tenant, name))
        row[COLD] = row.get(COLD, 0) + 1
        row[COLD_US] = row.get(COLD_US, 0) + _us(seconds)

    def tokens(self, minute: int, tenant: str, name: str, prompt: int, completion: int) -> None:
        """The usage of one answer of a vLLM function (a deployed one: no row for made-up names)."""
        row = self._row((minute, tenant, name))
        row[TOKENS_IN] = row.get(TOKENS_IN, 0) + prompt
        row[TOKENS_OUT] = row.get(TOKENS_OUT, 0) + completion

    def sample(self, minute: int, gauges: list[tuple[str, str, int, int]]) -> None:
        """One sampling moment: (tenant, function, in-flight, ready instances) of each function
        this gateway knows; raises each row's peaks, and each tenant's by its sum."""
        tenants: dict[str, list[int]] = {}
        for tenant, name, inflight, instances in gauges:
            self._peak((minute, tenant, name), inflight, instances)
            total = tenants.setdefault(tenant, [0, 0])
            total[0] += inflight
            total[1] += instances
        for tenant, (inflight, instances) in tenants.items():
            self._peak((minute, tenant, TENANT_ROW), inflight, instances)

    def _peak(self, key: Key, inflight: int, instances: int) -> None:
        if not inflight and not instances and key not in self.rows:
            return                       # nothing to say: no empty rows for idle functions
        row = self._row(key)
        if inflight > row.get(INFLIGHT_PEAK, 0):
            row[INFLIGHT_PEAK] = inflight
        if instances > row.get(INSTANCES, 0):
            row[INSTANCES] = instances

    def take(self) -> dict[Key, dict[str, int]]:
        taken, self.rows = self.rows, {}
        return taken

    def put_back(self, taken: dict[Key, dict[str, int]]) -> None:
        for key, row in taken.items():
            mine = self._row(key)
            for field, amount in row.items():
                mine[field] = max(mine.get(field, 0), amount) if field in PEAKS else mine.get(field, 0) + amount


def scopes(taken: dict[Key, dict[str, int]]) -> dict[tuple[str, str, int], dict[str, int]]:
    """The stored hashes a flush changes: ("function", tenant.name or name, hour) and
    ("tenant", tenant, hour) -> "MM|FIELD" -> amount; the tenant's sums add its functions'."""
    out: dict[tuple[str, str, int], dict[str, int]] = {}
    for (minute, tenant, name), row in taken.items():
        hour, mm = divmod(minute, 60)
        prefix = f"{mm:02d}{SEP}"
        t = out.setdefault(("tenant", tenant, hour), {})
        if name == TENANT_ROW:
            for field, amount in row.items():
                t[prefix + field] = max(t.get(prefix + field, 0), amount)
            continue
        f = out.setdefault(("function", qualify(tenant, name), hour), {})
        for field, amount in row.items():
            f[prefix + field] = amount
            if field not in PEAKS:
                t[prefix + field] = t.get(prefix + field, 0) + amount
    return out


# --- reading ---------------------------------------------------------------------------------

STEPS = (1, 5, 15, 30, 60, 180, 360, 720, 1440)   # minutes per point a range may be shown at
STEP_NAMES = {(f"{m // 1440}d" if m % 1440 == 0 else f"{m // 60}h" if m % 60 == 0 else f"{m}m"): m for m in STEPS}
MAX_POINTS = 360


def parse_range(text: str | None, retention: float, default: str = "1h") -> int:
    """Minutes of a ?range= such as "30m", "1h", "7d": at least one, at most the retention."""
    raw = text or default
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise MetricsError("range", str(exc)) from None
    if seconds < 60:
        raise MetricsError("range", f"expected at least 1m, got {raw[:40]!r}")
    if seconds > retention:
        raise MetricsError("range", f"expected at most the retention, {retention / 86400:g}d "
                                    f"(GANTRY_METRICS_RETENTION), got {raw[:40]!r}")
    return math.ceil(seconds / 60 - 1e-9)


def parse_step(text: str | None, minutes: int) -> int:
    """Minutes per point: ?step= if given (one of STEPS), else the smallest of STEPS that shows
    the range in at most MAX_POINTS points."""
    if text:
        step = STEP_NAMES.get(text)
        if step is None:
            raise MetricsError("step", "expected one of " + ", ".join(STEP_NAMES) + f", got {text[:40]!r}")
        if minutes / step > 10 * MAX_POINTS:
            raise MetricsError("step", f"expected at most {10 * MAX_POINTS} points, got {math.ceil(minutes / step)}")
        return int(step)
    return next((s for s in STEPS if math.ceil(minutes / s) <= MAX_POINTS), STEPS[-1])




def window(now: float, minutes: int, step: int) -> tuple[int, int]:
    """(first minute, end minute exclusive): the last MINUTES up to and with the current one,
    the first moved back to a multiple of STEP so points line up across calls."""
    end = int(now // 60) + 1
    first = end - minutes
    return first - first % step, end


def hours(first: int, end: int) -> list[int]:
    return list(range(first // 60, (end - 1) // 60 + 1))


def minute_rows(hashes: dict[int, dict[str, str]], first: int, end: int) -> dict[int, dict[str, int]]:
    """Stored hour hashes (hour -> "MM|FIELD" -> value) as minute -> FIELD -> amount, within
    [first, end)."""
    out: dict[int, dict[str, int]] = {}
    for hour, fields in hashes.items():
        for key, value in fields.items():
            mm, sep, field = key.partition(SEP)
            if not sep or not mm.isdigit():
                continue
            minute = hour * 60 + int(mm)
            if first <= minute < end:
                try:
                    out.setdefault(minute, {})[field] = int(value)
                except ValueError:
                    continue
    return out


def summarize(rows: list[dict[str, int]], seconds: float) -> dict[str, Any]:
    """One point (or the totals) from minute rows spanning SECONDS."""
    sums: dict[str, int] = {}
    peaks = dict.fromkeys(PEAKS, 0)
    hist: dict[int, int] = {}
    errors: dict[str, int] = {}
    for row in rows:
        for field, amount in row.items():
            if field in PEAKS:
                peaks[field] = max(peaks[field], amount)
            elif field.startswith(BUCKET):
                i = int(field[len(BUCKET):]) if field[len(BUCKET):].isdigit() else -1
                if 0 <= i < histogram.COUNT:
                    hist[i] = hist.get(i, 0) + amount
            elif field.startswith(ERROR):
                code = field[len(ERROR):]
                errors[code] = errors.get(code, 0) + amount
            else:
                sums[field] = sums.get(field, 0) + amount
    n, cold = sums.get(INVOCATIONS, 0), sums.get(COLD, 0)
    p50, p95, p99 = histogram.quantiles(hist, QS)
    return {
        "invocations": n,
        "async_attempts": sums.get(ASYNC, 0),
        "errors": sum(errors.values()),
        "errors_by_code": dict(sorted(errors.items())),
        "throttles": sums.get(THROTTLES, 0),
        "cold_starts": cold,
        "cold_wait_avg": round(sums.get(COLD_US, 0) / cold / 1e6, 6) if cold else None,
        "duration": {"avg": round(sums.get(DURATION_US, 0) / n / 1e6, 6) if n else None,
                     "p50": _round(p50), "p95": _round(p95), "p99": _round(p99)},
        "concurrency_avg": round(sums.get(DURATION_US, 0) / 1e6 / seconds, 4) if seconds > 0 else 0.0,
        "inflight_peak": peaks[INFLIGHT_PEAK],
        "instances_peak": peaks[INSTANCES],
        "tokens_in": sums.get(TOKENS_IN, 0),
        "tokens_out": sums.get(TOKENS_OUT, 0),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def report(hashes: dict[int, dict[str, str]], first: int, end: int, step: int) -> dict[str, Any]:
    """The API's answer: totals over [first, end) and one point per STEP minutes."""
    minutes = minute_rows(hashes, first, end)
    series = []
    for start in range(first, end, step):
        rows = [minutes[m] for m in range(start, min(start + step, end)) if m in minutes]
        series.append({"start": start * 60, **summarize(rows, min(step, end - start) * 60)})
    return {"since": first * 60, "until": end * 60, "step": step * 60,
            "totals": summarize(list(minutes.values()), (end - first) * 60), "series": series}

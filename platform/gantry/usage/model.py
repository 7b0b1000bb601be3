"""Usage, cost and audit: what is counted, how a day bucket is read back into per-function
totals, the operator's price table and the cost arithmetic.  Pure: no I/O (the records are
gantry.usage.store's; docs/tenants.md "Usage and cost" says when each counter moves).

A tenant's usage lives in one Redis HASH per UTC day (keys.usage_day), field
``FUNCTION|COUNTER`` -> number, FUNCTION the bare name within the tenant.
"""
from __future__ import annotations

import calendar
import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

# Counters, in the order the API and the CLI show them.  The gateway writes the first four
# (requests), the scheduler the last three (reservations).
INVOCATIONS = "invocations"      # invoke requests of a deployed function admitted past the rate limit
ERRORS = "errors"                # of those, answered with a status >= 500 (function errors, crashes, 503, 504)
THROTTLES = "throttles"          # invoke requests refused 429 by the key's rate limit
DURATION = "duration_seconds"    # gateway wall time of the counted invocations, summed
CPU = "cpu_seconds"              # cores reserved x seconds
MEMORY = "memory_gib_seconds"    # GiB reserved x seconds
GPU = "gpu_seconds"              # GPUs reserved x seconds
COUNTERS = (INVOCATIONS, ERRORS, THROTTLES, DURATION, CPU, MEMORY, GPU)
WHOLE = frozenset({INVOCATIONS, ERRORS, THROTTLES})      # HINCRBY; the others HINCRBYFLOAT

RETENTION_DAYS = 400             # a day bucket expires this long after its last write
SEP = "|"                        # FUNCTION|COUNTER; a function name never holds it


class UsageError(ValueError):
    """A query or price-table value that does not validate; str() names the field and expectation."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def day_of(ts: float) -> str:
    """The UTC day of a wall time, "YYYY-MM-DD": the bucket a count made at ``ts`` goes to."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


# --- reading buckets back ----------------------------------------------------------------

def empty() -> dict[str, float]:
    return {c: 0 for c in COUNTERS}


def aggregate(buckets: list[dict[str, str]]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-function totals and the grand total of day buckets (HGETALL results, decoded).
    Fields that are not FUNCTION|COUNTER of a known counter are ignored (a newer writer's)."""
    per: dict[str, dict[str, float]] = {}
    for bucket in buckets:
        for key, raw in bucket.items():
            name, sep, counter = key.rpartition(SEP)
            if not sep or counter not in COUNTERS:
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            row = per.setdefault(name, empty())
            row[counter] += value
    totals = empty()
    for row in per.values():
        for c in COUNTERS:
            totals[c] += row[c]
    return {n: _shaped(r) for n, r in sorted(per.items())}, _shaped(totals)


def _shaped(row: dict[str, float]) -> dict[str, float]:
    return {c: int(round(v)) if c in WHOLE else round(v, 6) for c, v in row.items()}


# --- the query's range -------------------------------------------------------------------

_DAYS = re.compile(r"^(\d{1,3})d$")


def parse_day(value: str, what: str, today: date) -> date:
    """"YYYY-MM-DD", or "Nd": the day N-1 days before today (so "1d" is today, "7d" the last
    seven days with today)."""
    found = _DAYS.match(value)
    if found:
        n = int(found.group(1))
        if not 1 <= n <= RETENTION_DAYS:
            raise UsageError(what, f"expected from 1d to {RETENTION_DAYS}d, got {value!r}")
        return today - timedelta(days=n - 1)
    try:
        return date.fromisoformat(value) if len(value) == 10 else _bad_day(what, value)
    except ValueError:
        return _bad_day(what, value)


def _bad_day(what: str, value: str) -> date:
    raise UsageError(what, f"expected a day YYYY-MM-DD or a number of days such as 7d, got {value[:40]!r}")


def day_range(since: str | None, until: str | None, now: float) -> list[str]:
    """The days ``since`` .. ``until`` (inclusive) as bucket names; since defaults to the first
    of this month, until to today (UTC); at most RETENTION_DAYS days."""
    today = datetime.fromtimestamp(now, timezone.utc).date()
    first = parse_day(since, "since", today) if since else today.replace(day=1)
    last = parse_day(until, "until", today) if until else today
    if last < first:
        raise UsageError("until", f"expected a day on or after since ({first}), got {last}")
    if (last - first).days >= RETENTION_DAYS:
        raise UsageError("since", f"expected a range of at most {RETENTION_DAYS} days (what is kept), "
                                  f"got {(last - first).days + 1}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def month_days(now: float) -> list[str]:
    """This UTC month's days up to today: the month-to-date buckets."""
    today = datetime.fromtimestamp(now, timezone.utc).date()
    return [today.replace(day=d).isoformat() for d in range(1, today.day + 1)]


# --- prices and cost ---------------------------------------------------------------------

@dataclass(frozen=True)
class Prices:
    """The operator's price table (GANTRY_PRICES).  Zero prices cost nothing."""
    cpu_second: float = 0.0           # per core-second reserved
    memory_gib_second: float = 0.0    # per GiB-second reserved
    gpu_second: float = 0.0           # per GPU-second reserved
    million_invocations: float = 0.0  # per million invocations
    currency: str = ""                # a label only ("USD"); never converted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PRICE_FIELDS = ("cpu_second", "memory_gib_second", "gpu_second", "million_invocations")


def parse_prices(text: str) -> Prices:
    """A price table from JSON text: an object of the Prices fields (each optional)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError("prices", f"expected a JSON object such as {{\"cpu_second\": 0.00001}} ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError("prices", "expected a JSON object of price -> amount")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "currency":
            if not isinstance(value, str) or len(value) > 16:
                raise UsageError("prices.currency", f"expected a short label such as \"USD\", got {value!r:.40}")
            values[key] = value
        elif key in _PRICE_FIELDS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < 0:
                raise UsageError(f"prices.{key}", f"expected a number >= 0, got {value!r:.40}")
            values[key] = float(value)
        else:
            raise UsageError(f"prices.{key}", f"unknown price; expected {', '.join(_PRICE_FIELDS)} or currency")
    return Prices(**values)


def cost(totals: dict[str, float], prices: Prices) -> float:
    """What TOTALS (counters -> amounts) cost at PRICES."""
    return (totals.get(CPU, 0) * prices.cpu_second + totals.get(MEMORY, 0) * prices.memory_gib_second
            + totals.get(GPU, 0) * prices.gpu_second
            + totals.get(INVOCATIONS, 0) / 1e6 * prices.million_invocations)


MIN_ELAPSED = 3600.0   # the projection never divides by less than an hour of the month


def month_progress(now: float) -> tuple[float, float]:
    """(seconds of this UTC month elapsed, at least MIN_ELAPSED; seconds in the whole month)."""
    t = datetime.fromtimestamp(now, timezone.utc)
    start = datetime(t.year, t.month, 1, tzinfo=timezone.utc).timestamp()
    length = calendar.monthrange(t.year, t.month)[1] * 86400.0
    return max(MIN_ELAPSED, now - start), length


def estimate(month_to_date: float, now: float) -> float:
    """The month's cost projected from month to date at the rate so far:
    month_to_date x seconds in the month / seconds elapsed (at least an hour)."""
    elapsed, length = month_progress(now)
    return month_to_date * length / min(elapsed, length)

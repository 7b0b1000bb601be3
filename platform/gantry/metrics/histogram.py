"""A fixed ladder of log-spaced duration buckets: every gateway and every minute uses the same
bounds, so histograms merge exactly by adding their bucket counts (replicas, minutes, the
functions of a tenant), and a quantile read from a merged histogram is the one read from all
the observations together, to within one bucket.

Bucket 0 holds durations under LOWEST (100 µs); bucket i (1 <= i < OVERFLOW) holds
[LOWEST * 2**((i-1)/SUB), LOWEST * 2**(i/SUB)), each bound 2**(1/8) (9.05 %) above the one
before; bucket OVERFLOW holds everything from LOWEST * 2**OCTAVES (about 1 h 52 min) up.  A
quantile is reported as its bucket's geometric middle, so it is within 4.4 % of the true
value inside the ladder.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping

SUB = 8                  # buckets per doubling
LOWEST = 1e-4            # seconds: the first bound
OCTAVES = 26             # doublings above LOWEST covered (1e-4 * 2**26 s = 6711 s)
OVERFLOW = OCTAVES * SUB + 1
COUNT = OVERFLOW + 1     # buckets in all
# BOUNDS[k] is the lower bound of bucket k + 1 (the upper bound of bucket k)
BOUNDS: tuple[float, ...] = tuple(LOWEST * 2 ** (k / SUB) for k in range(OVERFLOW))


def index(seconds: float) -> int:
    """The bucket of a duration (bisect over the same bounds everywhere: exact and consistent)."""
    return bisect_right(BOUNDS, seconds)


def lower(i: int) -> float:
    return 0.0 if i == 0 else BOUNDS[i - 1]


def upper(i: int) -> float:
    return math.inf if i >= OVERFLOW else BOUNDS[i]


def middle(i: int) -> float:
    """The value a quantile in bucket I is reported as."""
    if i == 0:
        return LOWEST / 2
    if i >= OVERFLOW:
        return BOUNDS[-1]
    return math.sqrt(BOUNDS[i - 1] * BOUNDS[i])


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """The sum of sparse histograms (bucket -> count)."""
    out: dict[int, int] = {}
    for h in histograms:
        for i, n in h.items():
            if n:
                out[i] = out.get(i, 0) + n
    return out


def quantiles(hist: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """The nearest-rank quantile Q (0 < Q <= 1) of each of QS: the middle of the bucket that
    holds the ceil(Q * n)-th smallest observation; None for an empty histogram."""
    total = sum(hist.values())
    qs = list(qs)
    if total <= 0:
        return [None] * len(qs)
    ranks = [max(1, math.ceil(q * total - 1e-9)) for q in qs]
    out: list[float | None] = [None] * len(qs)
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        for k, rank in enumerate(ranks):
            if out[k] is None and seen >= rank:
                out[k] = middle(i)
    return out


def nearest_rank(values: Iterable[float], q: float) -> float:
    """The exact nearest-rank quantile of raw observations (what quantiles() approximates)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]

"""Summaries of repeated measurements: every figure is a median of repeats with min and max."""
from __future__ import annotations

import math
import statistics
from typing import Iterable


def summary(samples: Iterable[float], digits: int = 3) -> dict:
    """{"median", "min", "max", "n", "samples"} of the repeats (empty: n = 0, figures None)."""
    values = [float(v) for v in samples if v is not None and not math.isnan(v)]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values),
            "samples": [round(v, digits) for v in values]}


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)

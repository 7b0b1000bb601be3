"""The duration histogram: bucket bounds, exact merges, quantiles within one bucket."""
from __future__ import annotations

import math
import random

import pytest

from gantry.metrics import histogram as h


def test_every_duration_falls_in_the_bucket_whose_bounds_hold_it():
    rng = random.Random(7)
    values = [0.0, 1e-7, h.LOWEST, *h.BOUNDS[:5], h.BOUNDS[-1], 1e6,
              *(10 ** rng.uniform(-5, 4) for _ in range(5000))]
    for x in values:
        i = h.index(x)
        assert h.lower(i) <= x < h.upper(i), (x, i)
    assert h.index(h.BOUNDS[-1]) == h.OVERFLOW and h.index(0.0) == 0
    assert h.upper(h.OVERFLOW) == math.inf and len(h.BOUNDS) == h.COUNT - 1


def test_bounds_grow_by_a_fixed_ratio_and_the_middle_is_within_the_known_error():
    ratio = 2 ** (1 / h.SUB)
    for a, b in zip(h.BOUNDS, h.BOUNDS[1:]):
        assert b / a == pytest.approx(ratio, rel=1e-12)
    for i in range(1, h.OVERFLOW):
        mid = h.middle(i)
        assert h.lower(i) < mid < h.upper(i)
        # a value anywhere in the bucket is within sqrt(ratio) - 1 (4.4 %) of its middle
        assert max(mid / h.lower(i), h.upper(i) / mid) == pytest.approx(math.sqrt(ratio))


def _hist(values):
    out: dict[int, int] = {}
    for v in values:
        out[h.index(v)] = out.get(h.index(v), 0) + 1
    return out


def test_merging_parts_is_exactly_the_histogram_of_the_whole():
    rng = random.Random(3)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(20_000)]
    parts = [values[i::7] for i in range(7)]       # seven "gateways" or "minutes"
    merged = h.merge(_hist(p) for p in parts)
    assert merged == _hist(values)
    qs = (0.5, 0.95, 0.99, 1.0)
    assert h.quantiles(merged, qs) == h.quantiles(_hist(values), qs)


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_are_in_the_bucket_of_the_exact_nearest_rank(seed):
    rng = random.Random(seed)
    values = [rng.expovariate(1 / 0.2) for _ in range(rng.randint(1, 3000))]
    hist = _hist(values)
    for q, got in zip((0.5, 0.95, 0.99), h.quantiles(hist, (0.5, 0.95, 0.99))):
        exact = h.nearest_rank(values, q)
        assert h.index(got) == h.index(exact), (q, got, exact)
        assert abs(got - exact) / exact <= math.sqrt(2 ** (1 / h.SUB)) - 1 + 1e-9


def test_an_empty_histogram_has_no_quantiles():
    assert h.quantiles({}, (0.5, 0.99)) == [None, None]
    assert h.quantiles({h.index(0.3): 1}, (0.5, 0.99)) == [h.middle(h.index(0.3))] * 2

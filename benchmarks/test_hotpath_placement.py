"""pytest-benchmark: the placement hot path, C vs Python twin vs what users pick, one run.

Each round is a Python loop of many calls; `extra_info["ns_per_op"]` divides the round's
median by the number of calls (the loop's own cost included).  Figures and goals:
BENCHMARKS.md, "Hot path"; the side-by-side script is benchmarks/hotpath_report.py.
"""
from __future__ import annotations

import pytest

import hotpath_report

CASES = hotpath_report.placement_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_placement(benchmark, name):
    fn, ops = CASES[name]
    benchmark.group = "hotpath-placement"
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["ops_per_round"] = ops
    benchmark.extra_info["ns_per_op"] = benchmark.stats.stats.median * 1e9 / ops


def test_placement_quality(benchmark):
    """Max/mean load at 1+eps = 1.10 and 1.25; keys moved adding a node to 100 (ideal 1/101)."""
    q = benchmark.pedantic(hotpath_report.placement_quality, rounds=1, iterations=1)
    benchmark.extra_info.update(q)
    assert q["bounded_1.10_max_over_mean"] <= q["bounded_1.10_cap_over_mean"]
    assert q["bounded_1.25_max_over_mean"] <= q["bounded_1.25_cap_over_mean"]
    assert q["plain_moved"] < 1.6 * q["ideal_moved"]

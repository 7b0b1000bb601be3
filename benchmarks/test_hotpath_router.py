"""pytest-benchmark: the router hot path, C vs Python twin vs what users pick, one run.

Each round is a Python loop of many calls; `extra_info["ns_per_op"]` divides the round's
median by the number of calls (the loop's own cost included).  Figures and goals:
BENCHMARKS.md, "Hot path"; the side-by-side script is benchmarks/hotpath_report.py.
"""
from __future__ import annotations

import pytest

import hotpath_report

CASES = hotpath_report.router_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_router(benchmark, name):
    fn, ops = CASES[name]
    benchmark.group = "hotpath-router"
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["ops_per_round"] = ops
    benchmark.extra_info["ns_per_op"] = benchmark.stats.stats.median * 1e9 / ops

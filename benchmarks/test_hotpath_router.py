"""pytest-benchmark: the router hot path, C vs Python twin vs what users pick, one run, and
the gateway balancer's pick and release on top of it.

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


def test_balancer_pick_release(benchmark):
    """The gateway's use of the router: Balancer.pick's ticket and its release, 16 instances."""
    from gantry.gateway.balancer import Balancer
    from gantry.state import READY, Instance

    lb = Balancer()
    lb.update([Instance(id=f"inst-{i}", function="f", version=1, node="n", state=READY,
                        host="127.0.0.1", port=8000 + i) for i in range(16)], 1 << 20)
    n = 20000

    def go(pick=lb.pick, release=lb.release):
        for _ in range(n):
            release(pick())
    benchmark.group = "hotpath-router"
    benchmark.pedantic(go, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["ops_per_round"] = n
    benchmark.extra_info["ns_per_op"] = benchmark.stats.stats.median * 1e9 / n

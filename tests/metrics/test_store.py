"""The metrics store on a real Redis: two gateways' flushes add up exactly, peaks keep the
max, each hour hash expires after the retention, and a report reads them back."""
from __future__ import annotations

import time

from gantry import keys
from gantry.metrics import histogram, model
from gantry.metrics.model import Rows
from gantry.metrics.store import MetricsStore


async def test_two_gateways_flushes_add_up_and_read_back(aredis):
    now = time.time()
    minute = int(now // 60)
    store = MetricsStore(aredis)
    durations = ([0.01 * (i + 1) for i in range(50)], [0.5 + 0.02 * i for i in range(30)])
    for part in durations:                              # one gateway each
        rows = Rows()
        for d in part:
            rows.invocation(minute, "acme", "fn", True, 200, d)
        rows.invocation(minute, "acme", "fn", True, 502, 0.3, "function_crashed")
        rows.sample(minute, [("acme", "fn", len(part) // 10, 2)])
        assert await store.add(rows.take(), retention=3600) > 0
    hour = minute // 60
    ttl = await aredis.ttl(keys.metrics_function("acme.fn", hour))
    assert (hour + 1) * 3600 + 3600 - now - 5 <= ttl <= (hour + 1) * 3600 + 3600 - now + 1
    assert await aredis.ttl(keys.metrics_tenant("acme", hour)) > 0

    for kind, scope in (("function", "acme.fn"), ("tenant", "acme")):
        hashes = await store.hours(kind, scope, model.hours(minute - 5, minute + 1))
        report = model.report(hashes, minute - 5, minute + 1, 1)
        t = report["totals"]
        everything = [*durations[0], *durations[1], 0.3, 0.3]
        assert t["invocations"] == 82 and t["errors_by_code"] == {"function_crashed": 2}
        assert t["inflight_peak"] == 5 and t["instances_peak"] == 2    # max of 5 and 3, of 2 and 2
        assert t["duration"]["avg"] == round(sum(everything) / 82, 6)
        for q in ("p50", "p95", "p99"):
            exact = histogram.nearest_rank(everything, int(q[1:]) / 100)
            assert histogram.index(t["duration"][q]) == histogram.index(exact), (q, t["duration"][q], exact)
        assert report["series"][-1]["invocations"] == 82 and report["series"][0]["invocations"] == 0


async def test_nothing_to_flush_is_no_call(aredis):
    assert await MetricsStore(aredis).add({}, retention=60) == 0
    assert await aredis.keys("gantry:metrics:*") == []

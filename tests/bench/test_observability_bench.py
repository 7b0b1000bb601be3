"""The observability section of `gantry bench` (gantry.bench.observability): its figures from
fixed wrk runs (pure: paired per round against metrics and tracing off), its goals and its
table.  The section's real run is in tests/bench/test_bench_quick.py."""
from __future__ import annotations

import pytest

from gantry.bench import goals, observability, render


def wrk(rps: float, cpu_us: float, p50: float = 1.0) -> dict:
    """One wrk run: RPS requests/s with the gateway spending CPU_US µs per request."""
    return {"rps": rps, "p50_ms": p50, "p99_ms": 4 * p50, "proxy_cpu_cores": cpu_us * rps / 1e6,
            "requests": int(rps * 3), "errors": 0}


# per mode: gateway µs per request in each of three rounds (the baseline drifts between rounds)
CPU = {"off": (300, 400, 350), "metrics": (309, 412, 360.5), "metrics_trace_1pct": (330, 440, 385),
       "metrics_trace_all": (750, 1000, 875)}


def section() -> dict:
    runs = {m: {c: [wrk(1000 if c == 1 else 2000, us) for us in CPU[m]] for c in (1, 64)} for m in CPU}
    modes, added = observability.figures(runs)
    return {"function": {"name": "f", "handler": "echo", "cpu": 2.0, "concurrency": 64}, "labels": observability.LABELS,
            "baseline": "off", "exporter": "to a sink", "exports": {"requests": 5, "bytes": 100}, "duration_s": 3,
            "rounds": 3, "rounds_planned": 3, "modes": modes, "added": added}


def test_added_cpu_is_paired_within_each_round():
    s = section()
    assert set(s["added"]) == {"metrics", "metrics_trace_1pct", "metrics_trace_all"}   # not the baseline itself
    m = s["added"]["metrics"]["64"]["gateway_cpu_per_request"]
    # +3 % in every round, although the baseline itself moves 300 -> 400 -> 350
    assert m["samples"] == pytest.approx([0.03, 0.03, 0.03]) and m["median"] == pytest.approx(0.03)
    assert s["added"]["metrics_trace_all"]["1"]["gateway_cpu_per_request"]["median"] == pytest.approx(1.5)
    assert s["added"]["metrics"]["64"]["rps_lost"]["median"] == pytest.approx(0.0)
    assert s["modes"]["off"]["64"]["gateway_cpu_us_per_request"]["median"] == pytest.approx(350.0)


def test_goals_judge_b_and_c_at_five_percent_and_state_d():
    by = {g["goal"][:3]: g for g in goals.observability_goals(section())}
    assert by["(b)"]["status"] == "met" and by["(b)"]["value"] == "+3.0 %"
    assert by["(c)"]["status"] == "not met" and by["(c)"]["value"] == "+10.0 %"   # 1 % tracing: 10 % here
    assert by["(d)"]["status"] == "not met" and by["(d)"]["value"] == "+150.0 %"
    assert all(g["status"] == "not measured" for g in goals.observability_goals(None))
    assert len(goals.evaluate({"observability": section()})) == 16


def test_over_five_percent_is_not_met():
    s = section()
    s["added"]["metrics"]["64"]["gateway_cpu_per_request"]["median"] = 0.051
    [b] = [g for g in goals.observability_goals(s) if g["goal"].startswith("(b)")]
    assert b["status"] == "not met"


def test_table_names_every_gateway_and_the_added_cost():
    text = "\n".join(render.render_observability(section()))
    for label in observability.LABELS.values():
        assert label in text
    assert "3.0 [3.0–3.0] %" in text and "150.0 [150.0–150.0] %" in text
    assert "### 11. Observability" in render.render({"sections": {"observability": section()}})

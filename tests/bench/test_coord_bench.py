"""The coord section of `gantry bench` (gantry.bench.coord): its figures from fixed samples
(pure), its goal and table, and one real `gantry bench --quick --only coord` run against its
own platform and redis-server: every operation measured both ways, nothing refused, the
floors on the same Redis.  No thresholds on the measured figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gantry.bench import coord, goals, render

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_round_figures_are_each_sides_percentiles_and_the_paired_gap():
    g = sorted(float(i) for i in range(1, 101))            # 1..100 ms
    f = sorted(i / 10 for i in range(1, 101))              # 0.1..10 ms
    r = coord.round_figures({"state_get": {"gateway": g, "redis": f}})["state_get"]
    assert (r["gateway"]["p50"], r["gateway"]["p99"]) == (50.0, 99.0)
    assert (r["redis"]["p50"], r["redis"]["p99"]) == (5.0, 9.9)
    assert r["gap_p50"] == pytest.approx(45.0)


def op(gw: float, floor: float) -> dict:
    return {"gateway": {"p50": gw, "p99": 3 * gw}, "redis": {"p50": floor, "p99": 2 * floor}, "gap_p50": gw - floor}


def section(gaps: dict[str, float]) -> dict:
    rounds = [{name: op(0.1 + gap + k * 0.01, 0.1) for name, gap in gaps.items()} for k in (0, 1, 2)]
    return {"client": "c", "samples_per_round": 10, "rounds": 3, "rounds_planned": 3, "floors": coord.FLOORS,
            "operations": coord.summarise(rounds)}


def test_summary_is_the_median_and_range_over_rounds():
    s = section({"state_get": 0.4})["operations"]["state_get"]
    assert s["gateway"]["p50"]["median"] == pytest.approx(0.51) and s["gateway"]["p50"]["n"] == 3
    assert (s["gap_p50"]["min"], s["gap_p50"]["max"]) == pytest.approx((0.4, 0.42))


def coord_goal(sections: dict) -> dict:
    [found] = [g for g in goals.evaluate(sections) if g["goal"].startswith("coordination")]
    return found


@pytest.mark.parametrize("gaps, status, worst", [
    ({"http": 3.0, "lock": 0.45, "state_get": 0.2}, "met", 0.46),         # the round trip is context only
    ({"http": 0.1, "lock": 0.45, "queue_get_ack": 0.9}, "not met", 0.91),
])
def test_goal_is_judged_on_the_worst_operation(gaps, status, worst):
    g = coord_goal({"coord": section(gaps)})
    assert g["status"] == status and g["value"] == pytest.approx(worst)
    assert coord_goal({})["status"] == "not measured"


def test_render_shows_every_operation_and_says_when_it_was_not_measured():
    text = render.render({"sections": {"coord": section({o: 0.5 for o in coord.OPERATIONS})}, "goals": [],
                          "machine": {}})
    assert "### 10. Coordination" in text
    for label in coord.LABELS.values():
        assert f"| {label} | " in text
    empty = render.render({"sections": {}, "goals": [], "machine": {}})
    assert f"### {render.TITLES['coord']}\n\nnot measured" in empty


@pytest.mark.timeout(150)
def test_quick_coord_section_on_a_real_platform(tmp_path, docker_client):
    out = tmp_path / "coord.json"
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "bench", "--quick", "--only", "coord", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
                          timeout=140)
    assert proc.returncode == 0, f"exited {proc.returncode}\n{proc.stderr[-6000:]}"
    data = json.loads(out.read_text())
    assert data["only"] == ["coord"] and set(data["sections"]) == {"coord"} and data["errors"] == {}
    c = data["sections"]["coord"]
    assert c["rounds"] >= 1 and c["samples_per_round"] == coord.plan(True)["samples"]
    assert set(c["operations"]) == set(coord.OPERATIONS)
    for name, x in c["operations"].items():
        for side in ("gateway", "redis"):
            p50, p99 = x[side]["p50"], x[side]["p99"]
            assert p50["n"] == c["rounds"] and 0 < p50["min"] and p50["median"] <= p99["median"], (name, side, x)
    [g] = [x for x in data["goals"] if x["goal"].startswith("coordination")]
    assert g["status"] in ("met", "not met") and g["value"] is not None

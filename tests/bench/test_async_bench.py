"""The async section of `gantry bench` (gantry.bench.asyncq): its figures from fixed records
(pure), its goals and table, and one real `gantry bench --quick --only async` run on the real
Docker engine and its own redis-server: every submission accepted and run, the latencies
there and ordered, nothing left behind.  No thresholds on the measured figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gantry.bench import asyncq, goals, render
from gantry.bench.runner import CEILINGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def record(created: float, started: float, finished: float, submit_ms: float, settled_ms: float,
           state: str = "succeeded") -> dict:
    return {"id": "x", "state": state, "created": created, "started": started, "finished": finished,
            "submit_ms": submit_ms, "settled_ms": settled_ms}


def test_latency_figures_use_the_records_clocks_and_skip_what_did_not_succeed():
    records = [record(100.0, 100.0 + i / 1000, 100.010 + i / 1000, 1.0 + i, 20.0 + i) for i in range(1, 101)]
    records.append(record(100.0, 100.5, 101.0, 1.0, 1.0, state="dead"))
    records.append({"error": "submit: 503 b'...'"})
    f = asyncq.latency_figures(records)
    assert f["n"] == 102 and f["succeeded"] == 100
    assert f["not_succeeded"] == ["dead", "submit: 503 b'...'"]
    assert f["queue_to_start_ms"]["p50"] == pytest.approx(50.0)      # started - created, in ms
    assert f["queue_to_start_ms"]["p99"] == pytest.approx(99.0)
    assert f["created_to_finished_ms"]["p50"] == pytest.approx(60.0)
    assert f["submit_ack_ms"]["p50"] == 51.0 and f["submit_to_settled_ms"]["p99"] == 119.0


def test_latency_summary_is_the_median_and_range_of_each_batch_percentile():
    batches = [asyncq.latency_figures([record(0.0, q / 1000, q / 1000, 1.0, 2.0)]) for q in (3.0, 5.0, 4.0)]
    s = asyncq.summarise_latency(batches)
    assert s["batches"] == 3 and s["invocations"] == 3 and s["succeeded"] == 3
    assert s["queue_to_start_ms"]["p50"]["median"] == 4.0
    assert (s["queue_to_start_ms"]["p50"]["min"], s["queue_to_start_ms"]["p50"]["max"]) == (3.0, 5.0)


def test_rate_figures_count_only_the_expected_status_as_accepted():
    run = {"n": 10, "wall_s": 0.5, "statuses": {"202": 8, "503": 1, "-1": 1}, "errors": ["503 b''"],
           "p50_ms": 2.0, "p99_ms": 9.0, "client_cores": 0.3}
    f = asyncq.rate_figures(run, 202)
    assert (f["ok"], f["errors"], f["rps"]) == (8, 2, 20.0)


def section(q50: float, errors: int = 0, states: dict | None = None) -> dict:
    lat = {"p50": {"median": q50, "min": q50, "max": q50, "n": 1}, "p99": {"median": 2 * q50, "min": 2 * q50,
                                                                          "max": 2 * q50, "n": 1}}
    batch = {"per_batch": 50, "batches": 1, "invocations": 50, "succeeded": 50, "not_succeeded": [],
             **{k: lat for k in ("queue_to_start_ms", "created_to_finished_ms", "submit_ack_ms",
                                 "submit_to_settled_ms")}}
    rate = {"rps": {"median": 900.0, "min": 800.0, "max": 950.0, "n": 3}, "p50_ms": lat["p50"],
            "p99_ms": lat["p99"], "client_cores": lat["p50"], "requests": 900, "errors": errors}
    return {"function": {"cpu": 2.0, "concurrency": 64, "instances": "min 1, max 1 (warm)"}, "client": "c",
            "clients": 64, "submissions_per_round": 300, "rounds": 3,
            "submit": {**rate, "accepted": 900 - errors}, "sync": {**rate, "ok": 900},
            "submit_vs_sync_rps": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3},
            "executed_per_s": lat["p50"], "drained": {"all_settled": True, "states": states or {"succeeded": 900}},
            "latency": {"single": batch, "burst": batch, "wait_poll": "polled"}}


@pytest.mark.parametrize("q50, errors, states, status", [
    (4.2, 0, None, ("met", "met")),
    (12.0, 0, None, ("not met", "met")),
    (4.2, 3, None, ("met", "not met")),
    (4.2, 0, {"succeeded": 899, "dead": 1}, ("met", "not met")),
])
def test_goals_judge_queue_to_start_and_lost_work(q50, errors, states, status):
    found = [g for g in goals.evaluate({"async": section(q50, errors, states)}) if "async" in g["goal"]]
    assert tuple(g["status"] for g in found) == status
    assert all(g["status"] == "not measured" for g in goals.evaluate({}) if "async" in g["goal"])


def test_render_shows_the_section_and_says_when_it_was_not_measured():
    text = render.render({"sections": {"async": section(4.2)}, "goals": [], "machine": {}})
    assert "### 9. Async invocations" in text and "| async submit (202) | 900 [800–950] |" in text
    assert "| one at a time | queue to start (`started − created`, the records) | 4.20 | 8.40 |" in text
    empty = render.render({"sections": {}, "goals": [], "machine": {}})
    assert "### 9. Async invocations: submissions and queue-to-start with a warm instance\n\nnot measured" in empty


def test_an_unknown_section_is_one_clear_error():
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "bench", "--only", "async,nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gantry bench: error: no section named nope (sections: {', '.join(CEILINGS)})"]


@pytest.mark.timeout(150)
def test_quick_async_section_on_a_real_platform(tmp_path, docker_client):
    out = tmp_path / "async.json"
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "bench", "--quick", "--only", "async", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
                          timeout=140)
    assert proc.returncode == 0, f"exited {proc.returncode}\n{proc.stderr[-6000:]}"
    assert "not rendered into BENCHMARKS.md" in proc.stderr       # a partial run leaves the committed block alone
    data = json.loads(out.read_text())
    assert data["only"] == ["async"] and set(data["sections"]) == {"async"} and data["errors"] == {}
    a = data["sections"]["async"]
    assert a["rounds"] >= 2
    assert a["submit"]["errors"] == 0 and a["submit"]["accepted"] == a["submit"]["requests"] == \
        a["rounds"] * a["submissions_per_round"]
    assert a["sync"]["errors"] == 0 and a["sync"]["ok"] == a["sync"]["requests"]
    assert a["drained"] == {"all_settled": True, "states": {"succeeded": a["submit"]["requests"]}}
    assert a["submit"]["rps"]["min"] > 0 and a["sync"]["rps"]["min"] > 0 and a["submit_vs_sync_rps"]["n"] == a["rounds"]
    for kind in ("single", "burst"):
        lat = a["latency"][kind]
        assert lat["batches"] == a["rounds"] and lat["succeeded"] == lat["invocations"] == a["rounds"] * lat["per_batch"]
        for key in ("queue_to_start_ms", "created_to_finished_ms", "submit_ack_ms", "submit_to_settled_ms"):
            p50, p99 = lat[key]["p50"], lat[key]["p99"]
            assert 0 < p50["min"] and p50["median"] <= p99["median"], (kind, key, lat[key])
        # on the records: an invocation starts before it finishes
        assert lat["queue_to_start_ms"]["p50"]["median"] <= lat["created_to_finished_ms"]["p50"]["median"]
    [goal] = [g for g in data["goals"] if "accepted and run" in g["goal"]]
    assert goal["status"] == "met"
    assert data["cleanup"]["containers_left"] == 0
    assert docker_client.api.containers(all=True, filters={"label": f"gantry.node={data['node_id']}"}) == []

"""`gantry bench --quick` as a smoke test: it runs end to end on the real Docker engine (and
its own redis-server), writes a complete results file, renders, and leaves no container
behind.  No thresholds: the figures must only be there and be positive.  A missing Docker
engine, redis-server, wrk or nginx makes the run (and so this test) fail, never skip."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gantry.bench import render

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def positive(summary: dict, what: str) -> None:
    assert isinstance(summary, dict) and summary.get("n", 0) >= 1, f"{what}: no samples ({summary!r})"
    for key in ("median", "min", "max"):
        assert isinstance(summary[key], (int, float)) and summary[key] > 0, f"{what}.{key} = {summary[key]!r}"
    assert summary["min"] <= summary["median"] <= summary["max"], f"{what}: {summary!r}"


@pytest.fixture(scope="module")
def results(tmp_path_factory, docker_client):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "bench", "--quick", "--out", str(out), "--no-render"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, f"gantry bench --quick exited {proc.returncode}\n{proc.stderr[-6000:]}"
    with open(out) as f:
        data = json.load(f)
    data["_stderr"] = proc.stderr
    return data


@pytest.mark.timeout(420)
def test_machine_named_and_run_bounded(results):
    m = results["machine"]
    assert results["mode"] == "quick" and results["schema"] == 1
    assert m["cpu_model"] and m["cpu_model"] != "unknown"
    assert m["cores"] >= 1 and m["cores_usable"] >= 1 and m["memory_gib"] > 0
    assert m["docker"] and m["wrk"] and m["nginx"]
    assert results["errors"] == {}
    assert 0 < results["elapsed_s"] < 290, results["elapsed_s"]   # LIMITS["quick"] and the last section


def test_every_section_present_with_positive_figures(results):
    s = results["sections"]
    assert set(s) >= {"hotpath", "deploy", "warm", "streaming", "cold_start", "scale", "density", "tenancy", "async", "coord",
                      "observability"}
    w = s["warm"]
    for path in ("direct", "nginx", "gateway"):
        for conns in ("1", "64"):
            x = w["paths"][path][conns]
            for key in ("rps", "p50_ms", "p99_ms", "wrk_cpu_cores"):
                positive(x[key], f"warm.{path}.{conns}.{key}")
            assert x["requests"] > 0 and x["errors"] == 0, x
            if path != "direct":
                positive(x["proxy_cpu_cores"], f"warm.{path}.{conns}.proxy_cpu_cores")
    assert set(w["ratios"]) == {"1", "64"}
    assert "proxy_pass http://fn" in w["nginx_config"] and "keepalive" in w["nginx_config"]

    c = s["cold_start"]
    positive(c["from_zero_ms"], "cold.from_zero_ms")
    positive(c["ready_instance_ms"], "cold.ready_instance_ms")
    pool = c["warm_pool"]
    if pool["available"]:  # the platform pauses idle instances: requests thaw them
        positive(pool["request_ms"], "cold.warm_pool.request_ms")
        for milestone in ("resuming", "ready", "response"):
            positive(pool["breakdown_at_ms"][milestone], f"cold.warm_pool.breakdown.{milestone}")
    else:
        assert pool["why"]
    for milestone in ("placed", "created", "started", "listening", "imported", "ready", "response"):
        if milestone == "created" and c["precreated"] == c["repeats"]:
            continue     # every start found a container made ahead (worker/spares.py): none was created
        positive(c["breakdown_at_ms"][milestone], f"cold.breakdown.{milestone}")
    assert c["breakdown_at_ms"]["response"]["median"] >= c["breakdown_at_ms"]["placed"]["median"]

    st = s["streaming"]
    for path in ("direct", "gateway"):
        positive(st["paths"][path]["first_chunk_ms"], f"stream.{path}.first")
        positive(st["paths"][path]["last_chunk_ms"], f"stream.{path}.last")
        # the last chunk comes after the generator's delays: it was streamed, not faked
        assert st["paths"][path]["last_chunk_ms"]["min"] >= st["ideal_last_ms"] * 0.9

    b, rd = s["deploy"]["builds"], s["deploy"]["redeploy"]
    for key in ("cold_build_ms", "code_only_rebuild_ms", "start_until_ready_ms"):
        positive(b[key], f"deploy.builds.{key}")
    for key in ("total_ms", "build_ms", "until_moved_ms"):
        positive(rd[key], f"deploy.redeploy.{key}")
    assert rd["requests_during"]["ok"] > 0

    sc = s["scale"]
    positive(sc["all_answered_ms"], "scale.all_answered_ms")
    positive(sc["instances_placed"], "scale.instances_placed")
    positive(sc["containers_started"], "scale.containers_started")
    assert sc["instances_placed"]["max"] <= sc["function"]["max_instances"]

    d = s["density"]                   # more functions than the node holds: every call still answered
    assert d["requests"] == 2 * d["functions"] and d["failed_requests"] == 0, d
    positive(d["all_calls_ms"], "density.all_calls_ms")
    # 6 functions, room for 2: calls had to start instances, so others were stopped to make room
    assert d["cold_calls"]["first_round"] + d["cold_calls"]["second_round"] > d["node"]["cpu_allocatable"] / 0.5, d
    assert d["containers_running_at_end"] <= d["node"]["cpu_allocatable"] / 0.5, d

    t = s["tenancy"]                   # the same function through the same gateway, three kinds of key
    for path in ("admin_key", "tenant_key", "many_keys"):
        for conns in ("1", "64"):
            x = t["paths"][path][conns]
            positive(x["rps"], f"tenancy.{path}.{conns}.rps")
            assert x["requests"] > 0 and x["errors"] == 0, (path, conns, x)
    assert t["keys"] >= 100 and set(t["ratios"]) == {"1", "64"}

    o = s["observability"]             # four gateways: metrics and tracing off, metrics, +1 % traces, +all traces
    assert set(o["modes"]) == {"off", "metrics", "metrics_trace_1pct", "metrics_trace_all"}
    for mode, by_conns in o["modes"].items():
        for conns in ("1", "64"):
            x = by_conns[conns]
            positive(x["rps"], f"observability.{mode}.{conns}.rps")
            positive(x["gateway_cpu_us_per_request"], f"observability.{mode}.{conns}.gateway_cpu_us_per_request")
            assert x["requests"] > 0 and x["errors"] == 0, (mode, conns, x)
    for mode in ("metrics", "metrics_trace_1pct", "metrics_trace_all"):   # paired against the baseline
        for conns in ("1", "64"):
            assert o["added"][mode][conns]["gateway_cpu_per_request"]["n"] == o["rounds"], (mode, conns)
    assert "off" not in o["added"] and o["exports"]["requests"] > 0

    h = s["hotpath"]
    for group, names in (("ratelimit", ("c", "py", "limits")), ("router", ("c", "py", "random.choices")),
                         ("placement", ("c", "py", "uhashring"))):
        for name in names:
            positive(h[group][name], f"hotpath.{group}.{name}")


def test_goals_stated(results):
    goals = results["goals"]
    assert len(goals) == 18
    counted = [g for g in goals if "instructions" in g["goal"]]      # callgrind: full runs only
    assert [g["status"] for g in counted] == ["not measured"] * 2 and "quick run" in counted[0]["why"]
    for goal in goals:
        assert goal["status"] in ("met", "not met", "not measured"), goal
        assert goal["why"]
    [pool_goal] = [g for g in goals if "warm-pool" in g["goal"]]
    available = results["sections"]["cold_start"]["warm_pool"]["available"]
    assert (pool_goal["status"] != "not measured") == available, pool_goal


def test_no_containers_left(results, docker_client):
    assert results["cleanup"]["containers_left"] == 0
    left = docker_client.api.containers(all=True, filters={"label": f"gantry.node={results['node_id']}"})
    assert left == [], [c["Names"] for c in left]


def test_renders_every_section(results):
    text = render.render(results, "results.json")
    assert text.startswith("<!-- bench:begin") and text.rstrip().endswith(render.END)
    for heading in ("### Goals", "### 1. Warm", "### 2. Cold", "### 3. Streaming", "### 4. Deploy", "### 5. Scale",
                    "### 6. Density", "### 7. Hot path", "### 8. Tenant resolution",
                    "### 9. Async invocations", "### 10. Coordination", "### 11. Observability"):
        assert heading in text
    assert results["machine"]["cpu_model"] in text

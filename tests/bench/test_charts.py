"""The bench's charts (gantry.bench.charts): the series are the results' own figures, and the
PNG files are drawn for what a run measured."""
import json
import os

from gantry.bench import charts
from gantry.bench.render import render

HERE = os.path.dirname(__file__)


def _results() -> dict:
    def stat(median, lo, hi):
        return {"median": median, "min": lo, "max": hi, "n": 3, "samples": [lo, median, hi]}

    def path(rps, p50, p99):
        return {"rps": stat(*rps), "p50_ms": stat(*p50), "p99_ms": stat(*p99)}

    return {"mode": "full", "sections": {
        "warm": {"paths": {
            "direct": {"1": path((3000, 2800, 3100), (0.3, 0.29, 0.4), (1.5, 1.0, 2.0)),
                       "64": path((7000, 6500, 7200), (8.5, 8.0, 9.0), (50, 45, 60))},
            "nginx": {"1": path((2100, 2000, 2200), (0.45, 0.43, 0.5), (1.4, 1.2, 1.6))},
            "gateway": {"1": path((1500, 1400, 1600), (0.7, 0.65, 0.8), (1.6, 1.3, 2.0)),
                        "64": path((1900, 1800, 2000), (20, 18, 25), (60, 50, 70))}}},
        "cold_start": {
            "from_zero_ms": stat(780, 600, 950),
            "breakdown_steps_ms": {"placed->created": stat(14, 10, 20), "created->started": stat(390, 300, 450),
                                   "started->listening": stat(340, 300, 400), "ready->response": stat(-1, -2, 3)},
            "docker_run_reference_ms": stat(700, 680, 760),
            "warm_pool": {"request_ms": stat(38, 32, 42),
                          "breakdown_steps_ms": {"resuming->unpaused": stat(17, 9, 20)}}}}}


def test_series_are_the_runs_own_figures():
    r = _results()
    lat = charts.latency_series(r)
    assert list(lat) == ["1", "64"]                     # by client count, numerically
    assert lat["1"]["gateway"]["p99"] == (1.6, 1.3, 2.0)
    assert "nginx" not in lat["64"]                     # not measured: left out, not zero
    thr = charts.throughput_series(r)
    assert thr["direct"] == [(1, 3000, 2800, 3100), (64, 7000, 6500, 7200)]
    assert thr["nginx"] == [(1, 2100, 2000, 2200)]
    bars = dict(charts.cold_start_series(r))
    assert bars["from zero (780 ms)"] == [("placed->created", 14), ("created->started", 390),
                                          ("started->listening", 340), ("ready->response", 0.0)]  # clock skew: 0
    assert bars["docker run (700 ms)"] == [("docker run until healthy", 700)]
    assert bars["from paused (38 ms)"] == [("resuming->unpaused", 17)]


def test_a_run_without_the_sections_has_no_series():
    assert charts.latency_series({}) == {} and charts.throughput_series({"sections": {}}) == {}
    assert charts.cold_start_series({"sections": {"cold_start": {}}}) == []


def test_draw_writes_one_png_per_measured_chart(tmp_path):
    written = charts.draw(_results(), str(tmp_path))
    assert [os.path.basename(p) for p in written] == list(charts.FILES)
    for p in written:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 10_000               # a drawn figure, not an empty canvas
    only_cold = {"sections": {"cold_start": _results()["sections"]["cold_start"]}}
    assert [os.path.basename(p) for p in charts.draw(only_cold, str(tmp_path / "b"))] == ["cold_start.png"]


def test_the_committed_run_draws_and_renders_with_its_charts(tmp_path):
    with open(os.path.join(HERE, "..", "..", "benchmarks", "results", "latest.json")) as f:
        results = json.load(f)
    assert len(charts.draw(results, str(tmp_path))) == 3
    results["charts"] = ["benchmarks/charts/latency.png"]
    assert "![latency](benchmarks/charts/latency.png)" in render(results)

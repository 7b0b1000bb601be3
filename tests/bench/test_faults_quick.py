"""`gantry bench --faults --quick` as a smoke test: one fault scenario under load and the
malformed-input run, end to end on the real Docker engine with the harness's own
redis-server.  No thresholds on the figures, but the accounting must be complete (every
request answered or timed out and counted once, every container's log read) and the hard
properties hold: no request ran twice, a 200 always ran, no 5xx for hostile input.  A
missing Docker engine or redis-server fails the run (and this test), never skips it."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from gantry.bench.faults import hostile, render

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def results(tmp_path_factory, docker_client):
    out = tmp_path_factory.mktemp("faults") / "faults.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "bench", "--faults", "--quick", "--out", str(out),
                           "--no-render"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"gantry bench --faults --quick exited {proc.returncode}\n{proc.stderr[-6000:]}"
    with open(out) as f:
        return json.load(f)


def test_run_bounded_and_complete(results):
    assert results["mode"] == "quick" and results["schema"] == 1
    assert results["errors"] == {} and results["skipped"] == []
    assert results["scenarios"] and 0 < results["elapsed_s"] < 150, results["elapsed_s"]


def test_every_request_accounted_for_and_none_ran_twice(results):
    for key, sc in results["scenarios"].items():
        r = sc["requests"]
        assert r["sent"] > 0, key
        assert r["accounted"] and r["unanswered"] == 0, (key, r["unanswered"])
        assert r["ok"] + r["failed"] == r["sent"], key
        assert sum(r["failures_by_answer"].values()) == r["failed"], key
        assert r["failed_planned"] + r["failed_unplanned"] == r["failed"], key
        assert r["failed_with_side_effect"] + r["failed_without_side_effect"] == r["failed"], key
        assert sum(row[1] for row in r["per_second"]) == r["sent"]                # [second, sent, ok, failed]
        assert sum(row[2] + row[3] for row in r["per_second"]) == r["sent"]
        # the hard properties: nothing ran twice; a 200 always ran; no side effect from nowhere
        assert r["duplicates"] == 0, (key, r["duplicate_tags"])
        assert r["ok_without_side_effect"] == 0, (key, r["ok_without_side_effect_tags"])
        assert r["stray_side_effects"] == 0, key
        assert r["side_effects"] >= r["ok"], key
        # the side effects were counted from every container, the dead ones included
        assert sc["capture"]["unreadable"] == {} and sc["capture"]["containers_seen"] >= 2, sc["capture"]
        assert sc["facts"]["fault"] is not None and "inject_error" not in sc["facts"], sc["facts"]
        assert sc["containers_left"] == 0 and sc["exited"] == {}, key


def test_hostile_input_gets_no_5xx_and_never_reaches_the_handler(results):
    h = results["hostile"]
    assert h["sent"] >= 40 and sum(h["by_status"].values()) == h["sent"]
    assert h["count_5xx"] == 0, h["by_status"]
    assert h["unexpected"] == [], h["unexpected"]
    assert h["good_request_side_effects"] == 1 and h["other_side_effects"] == 0, h["side_effects"]
    assert h["containers_left"] == 0 and h["capture"]["unreadable"] == {}


def test_renders(results):
    text = render.render(results, "faults.json")
    assert text.startswith(render.BEGIN) and text.rstrip().endswith(render.END)
    assert "### Faults under load" in text and "### Malformed input" in text
    for sc in results["scenarios"].values():
        assert sc["title"] in text


def _names(path: str, variable: str) -> set[str]:
    """The case names of a test module's CASES list (first item of each tuple) or MALFORMED
    dict (its keys), read from its source."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == variable for t in node.targets):
            if isinstance(node.value, ast.Dict):
                return {k.value for k in node.value.keys}
            return {elt.elts[0].value for elt in node.value.elts}
    raise AssertionError(f"{variable} not found in {path}")


def test_the_harness_sends_every_hostile_case_of_the_tests():
    """No hostile case of the gateway's tests is left out of the live run (no Docker needed)."""
    ours = {c[0] for c in hostile.cases({"scaling": {}, "resources": {}, "limits": {}}, "img:1", "t")}
    missing = _names("tests/gateway/test_hostile_input.py", "CASES") - ours
    assert not missing, missing
    assert _names("tests/gateway/test_hardening.py", "MALFORMED") == set(hostile.MALFORMED)

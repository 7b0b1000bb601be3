"""The scaling policy end to end: target_utilization sizes a function under real concurrent
requests, `warm` holds ready instances, and the decisions with their reasons are visible
through the API and `gantry describe`."""
from __future__ import annotations

import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from gantry.cli import main as cli_main

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(240)]

N = 3                   # concurrent slow requests
SLOW = 20.0             # seconds each: long enough for every instance to start meanwhile


def _ready(platform, name: str) -> int:
    return sum(1 for i in platform.function(name)["instances"] if i["state"] == "ready")


def _decisions(platform, name: str) -> list[dict]:
    return platform.client.call("GET", f"/v1/functions/{name}/decisions")["decisions"]


def test_target_utilization_and_warm_on_the_real_platform(platform, kinds_build):
    spec = kinds_build.spec.to_dict()
    spec["handler"] = "main:slow"
    spec["resources"].update(cpu=0.1, memory="64Mi")
    spec["limits"].update(timeout="60s")
    # each instance runs 2 x 0.5 = 1 request at a time: N requests want N instances
    spec["scaling"].update(concurrency=2, target_utilization=0.5, max_instances=5, min_instances=0,
                           idle_timeout="60s", keep_paused="0s")
    platform.deploy("policy-e2e", kinds_build.image, spec)

    with ThreadPoolExecutor(N) as pool:
        calls = [pool.submit(platform.invoke, "policy-e2e", json.dumps({"seconds": SLOW}).encode())
                 for _ in range(N)]
        platform.wait(f"{N} ready instances under {N} requests", lambda: _ready(platform, "policy-e2e") >= N,
                      timeout=SLOW + 10)
        results = [c.result(timeout=SLOW + 60) for c in calls]
    assert all(status == 200 for status, _ in results), results
    fn = platform.function("policy-e2e")
    live = [i for i in fn["instances"] if i["state"] not in ("draining", "stopping", "stopped", "failed")]
    assert len(live) == N, fn["instances"]               # exactly the computed count, not concurrency's 2
    assert fn["scale_target"] == N
    decisions = _decisions(platform, "policy-e2e")
    assert decisions[0]["to"] == N, decisions
    assert decisions[0]["reason"].startswith("scale up ") and f"{N} in flight / (2 x 0.5)" in decisions[0]["reason"], decisions
    assert all({"time", "from", "to", "reason"} <= set(d) for d in decisions)

    # warm: hold 5 ready (more than demand asks) for a minute
    answer = platform.client.call("POST", "/v1/functions/policy-e2e/warm", {"instances": 5, "for": "1m"})
    assert answer["instances"] == 5 and answer["until"]
    platform.wait("5 warm instances ready", lambda: _ready(platform, "policy-e2e") == 5, timeout=60)
    assert platform.function("policy-e2e")["warm"]["instances"] == 5
    assert _decisions(platform, "policy-e2e")[0]["reason"] == f"scale up {N}->5: warm 5"

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["describe", "policy-e2e", "--url", platform.client.url,
                         "--api-key", platform.client.api_key]) == 0
    text = out.getvalue()
    assert "target_utilization 0.5" in text and "warm: 5 until" in text, text
    assert f"scale up {N}->5: warm 5" in text and f"in flight / (2 x 0.5)" in text, text

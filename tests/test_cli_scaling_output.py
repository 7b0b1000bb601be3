"""`gantry describe`'s text from the API's answers (pure), and `gantry warm`'s arguments."""
from __future__ import annotations

from gantry.cli import parser
from gantry.cli_scaling import format_describe
from gantry.manifest import FunctionSpec, Scaling


def _function(**extra) -> dict:
    spec = FunctionSpec(name="echo", handler="main:handle",
                        scaling=Scaling(concurrency=2, target_utilization=0.5, scale_down_cooldown=120.0)).to_dict()
    return {"name": "echo", "tenant": "default", "latest": 2, "active": 2, "image": "gantry/echo:v2",
            "min_override": None, "ready": 1, "total": 1, "spec": spec, "scale_target": 3, "warm": None,
            "pending_reason": None, "start_failed": None, "error": None,
            "instances": [{"id": "echo-1", "version": 2, "node": "n1", "state": "ready", "address": "10.0.0.1:9000",
                           "reason": None, "created": 1.0}], **extra}


def test_describe_shows_spec_summary_instances_and_decisions():
    decisions = [{"time": 1_700_000_100.0, "from": 3, "to": 3, "held": "scale_down_cooldown",
                  "reason": "held by scale_down_cooldown (12s left): want 1, 2 in flight / (2 x 0.5)"},
                 {"time": 1_700_000_000.0, "from": 1, "to": 3, "reason": "scale up 1->3: 3 in flight / (2 x 0.5)"}]
    text = format_describe(_function(warm={"instances": 3, "until": 1_700_000_600.0}), decisions, 1_700_000_000.0)
    assert "echo (tenant default)" in text and "version 2 (active 2)" in text
    assert "concurrency 2, target_utilization 0.5" in text
    assert "scale_up_cooldown 0s, scale_down_cooldown 120s, idle_timeout 60s" in text
    assert "target: 3 instance(s), 1 ready of 1" in text
    assert "warm: 3 until " in text and "(600s left)" in text
    lines = text.splitlines()
    assert any(line.startswith("echo-1") and "ready" in line and "10.0.0.1:9000" in line for line in lines)
    held = next(i for i, line in enumerate(lines) if "held by scale_down_cooldown (12s left)" in line)
    up = next(i for i, line in enumerate(lines) if "scale up 1->3: 3 in flight / (2 x 0.5)" in line)
    assert held < up                                       # newest first


def test_describe_without_instances_or_decisions():
    text = format_describe(_function(instances=[], scale_target=None, ready=0, total=0), [], 0.0)
    assert "no instances" in text and "no scaling decisions yet" in text and "target: - instance(s)" in text


def test_warm_arguments():
    args = parser().parse_args(["warm", "echo", "3", "--for", "2h"])
    assert (args.name, args.instances, args.duration) == ("echo", 3, "2h")
    assert parser().parse_args(["warm", "echo", "0"]).duration == "10m"

"""scripts/gpu_check.py against the fake NVML: the script a GPU machine runs is not dead code."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_runs_against_the_fake_nvml():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "platform"), os.path.join(ROOT, "runtime")])}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gpu_check.py"), "--fake", "--rounds", "3000"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["nvml"] == "fake" and len(report["inventory"]) == 3
    assert report["inventory"][2]["name"] == "NVIDIA L4" and report["inventory"][2]["memory"] == 24 * 2**30
    sim = report["simulation"]
    assert sim["placed"] > 100 and sim["refused"] > 0
    assert sim["double_allocations"] == 0 and sim["leaks"] == 0


def test_gpu_check_without_a_driver_says_why_and_fails():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "platform"), os.path.join(ROOT, "runtime")])}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gpu_check.py"), "--rounds", "10"],
                          capture_output=True, text=True, env=env, timeout=60)
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["inventory"] == [] and "NVML" in report["empty_reason"]
    assert report["simulation"] is None

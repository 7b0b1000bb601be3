"""`gantry invoke --async`, `gantry invocations` and `gantry dlq` against a running platform,
as a user drives them: ids on stdout for scripts, exit statuses that say how it ended, and one
error line for bad input."""
from __future__ import annotations

import json
import os
import re

import pytest

from gantry.build import build_function

from test_cli import gantry

pytestmark = [pytest.mark.docker, pytest.mark.redis]
WORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "functions", "async-work")
ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def work_build(docker_client):
    return build_function(docker_client, WORK)


def deploy(platform, build) -> None:
    platform.deploy("async-work", build.image, build.spec.to_dict())


def submit(platform, event: dict, *flags: str) -> str:
    out = gantry(platform, "invoke", "async-work", "--async", "-d", json.dumps(event), *flags).stdout
    assert ID.match(out.strip()) and out.count("\n") == 1, out      # only the id: ID=$(gantry invoke ...)
    return out.strip()


def one_error_line(proc) -> str:
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("gantry: error: ")
    return proc.stderr.strip()


def test_invoke_async_then_wait_for_the_result(platform, work_build):
    deploy(platform, work_build)
    inv_id = submit(platform, {"n": 1}, "--priority", "high")
    got = gantry(platform, "invocations", "get", inv_id, "--wait", "60")
    assert "state:     succeeded" in got.stdout and "priority:  high" in got.stdout and "attempts:  1 of 3" in got.stdout
    # the JSON result, pretty, after the details
    result = got.stdout.split("result (application/json):\n", 1)[1]
    assert json.loads(result) == {"n": 1, "invocation_id": inv_id} and "\n  " in result
    as_json = json.loads(gantry(platform, "invocations", "get", inv_id, "--json").stdout)
    assert as_json["state"] == "succeeded" and as_json["result"]["n"] == 1
    raw = gantry(platform, "invocations", "result", inv_id).stdout
    assert json.loads(raw) == {"n": 1, "invocation_id": inv_id}

    # a 4xx answer settles as failed: --wait exits 1; `result` still writes its bytes
    failed_id = submit(platform, {"n": 2, "status": 422})
    failed = gantry(platform, "invocations", "get", failed_id, "--wait", "60", ok=False)
    assert failed.returncode == 1 and "state:     failed" in failed.stdout and "status:    422" in failed.stdout
    res = gantry(platform, "invocations", "result", failed_id, ok=False)
    assert json.loads(res.stdout) == {"n": 2}
    assert one_error_line(res) == f"gantry: error: invocation {failed_id} failed: its result (above) has status 422"

    # --idempotency-key: the sync call runs once; the async one with the key is that invocation
    first = gantry(platform, "invoke", "async-work", "-d", '{"n": 5}', "--idempotency-key", "order-5").stdout
    again = gantry(platform, "invoke", "async-work", "-d", '{"n": 5}', "--idempotency-key", "order-5").stdout
    assert first == again and json.loads(first)["n"] == 5
    replay = gantry(platform, "invoke", "async-work", "--async", "-d", '{"n": 5}', "--idempotency-key", "order-5")
    assert replay.stdout.strip() == json.loads(first)["invocation_id"]
    assert "was used before" in replay.stderr and "succeeded" in replay.stderr

    # bad input: one line, exit 1
    assert one_error_line(gantry(platform, "invocations", "get", "0" * 32, ok=False)) == \
        f"gantry: error: 404 not_found: no invocation '{'0' * 32}'"
    assert one_error_line(gantry(platform, "invocations", "get", "nope", "--wait", "5", ok=False)) == \
        "gantry: error: 404 not_found: no invocation 'nope'"
    assert one_error_line(gantry(platform, "invoke", "async-work", "--async", "--priority", "urgent", ok=False)) == \
        "gantry: error: --priority: expected one of high, normal, low, got 'urgent'"
    assert one_error_line(gantry(platform, "invoke", "async-work", "--priority", "low", ok=False)) == \
        "gantry: error: --priority needs --async (a sync invoke runs at once and answers here)"
    assert one_error_line(gantry(platform, "invocations", "cancel", inv_id, ok=False)).startswith(
        "gantry: error: 409 not_cancellable: ")
    assert one_error_line(gantry(platform, "invoke", "nope", "--async", ok=False)) == \
        "gantry: error: 404 not_found: no function named 'nope' is deployed"


def test_poison_invocations_in_the_dlq_replay_and_purge(platform, work_build):
    deploy(platform, work_build)
    first, second = submit(platform, {"n": 7, "fail": True}), submit(platform, {"n": 8, "fail": True})
    for inv_id in (first, second):
        dead = gantry(platform, "invocations", "get", inv_id, "--wait", "60", ok=False)
        assert dead.returncode == 1 and "state:     dead" in dead.stdout and "attempts:  3 of 3" in dead.stdout

    listing = gantry(platform, "dlq", "ls").stdout.splitlines()
    assert listing[0].split() == ["ID", "FUNCTION", "STATE", "ATTEMPTS", "ERROR", "DEAD", "AT", "(UTC)"]
    rows = sorted(line.split()[:5] for line in listing[1:])
    assert rows == sorted([[first, "async-work", "dead", "3/3", "function_error"],
                           [second, "async-work", "dead", "3/3", "function_error"]])
    assert gantry(platform, "dlq", "ls", "--function", "other").stdout == "no dead letters\n"
    limited = json.loads(gantry(platform, "dlq", "ls", "--limit", "1", "--json").stdout)["invocations"]
    assert len(limited) == 1 and limited[0]["id"] in (first, second) and limited[0]["dead_at"] > 0
    shown = gantry(platform, "dlq", "show", first).stdout
    assert "error:     function_error: " in shown and "poison 7" in shown
    assert "payload:   " in shown and "application/json" in shown

    # replay: the same id runs its three attempts again and is dead again
    replayed = gantry(platform, "dlq", "replay", first)
    assert replayed.stdout == "" and f"replayed {first}" in replayed.stderr
    dead = gantry(platform, "invocations", "get", first, "--wait", "60", "--json", ok=False)
    again = json.loads(dead.stdout)
    assert dead.returncode == 1 and again["state"] == "dead" and again["replays"] == 1 and again["attempts"] == 3

    # purge by id (an unknown id is an error line; the others are still purged), then --all
    purged = gantry(platform, "dlq", "purge", first, "0" * 32, ok=False)
    assert purged.stdout == "purged 1 dead letter\n"
    assert one_error_line(purged).startswith(f"gantry: error: {'0' * 32}: 404 not_found: ")
    assert gantry(platform, "dlq", "purge", "--all", "--function", "async-work").stdout == "purged 1 dead letter\n"
    assert gantry(platform, "dlq", "ls").stdout == "no dead letters\n"
    assert gantry(platform, "dlq", "purge", "--all").stdout == "purged 0 dead letters\n"
    assert one_error_line(gantry(platform, "dlq", "show", first, ok=False)) == \
        f"gantry: error: 404 not_found: no invocation '{first}'"

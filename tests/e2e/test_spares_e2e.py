"""Containers made ahead of need (worker/spares.py) on the whole platform: a function back at
zero gets one, the next request's instance is started from it (its id is the spare's), and
deleting the function leaves no container of it behind."""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(180)]


def _of(docker_client, function: str, node: str) -> list:
    return docker_client.api.containers(all=True, filters={"label": [f"gantry.function={function}",
                                                                     f"gantry.node={node}"]})


def _spare(docker_client, function: str, node: str):
    """(instance id, [container ids]) of the function's spare: a created container labelled
    gantry.spare and its running sandbox; None while there is none."""
    found = _of(docker_client, function, node)
    created = [c for c in found if c["Labels"].get("gantry.spare") and c["State"] == "created"
               and "gantry.sandbox" not in c["Labels"]]
    if len(created) != 1:
        return None
    instance = created[0]["Labels"]["gantry.instance"]
    sandbox = [c for c in found if c["Labels"].get("gantry.sandbox") == instance and c["State"] == "running"]
    return (instance, [created[0]["Id"], sandbox[0]["Id"]]) if sandbox else None


def test_a_function_at_zero_starts_from_its_spare_and_deleting_it_leaves_no_container(
        platform, kinds_build, docker_client):
    spec = kinds_build.spec.to_dict()
    spec["handler"] = "main:echo"
    spec["scaling"].update(max_instances=1, idle_timeout="1s", keep_paused="0s")
    platform.deploy("spare-e2e", kinds_build.image, spec)
    status, body = platform.invoke("spare-e2e", json.dumps({"n": 1}).encode())
    assert status == 200, body
    [first] = platform.function("spare-e2e")["instances"]
    node = first["node"]
    # at its maximum while it runs: no spare; idle, it is stopped, and the worker makes one
    platform.wait("scaled to zero", lambda: platform.function("spare-e2e")["total"] == 0 or None, timeout=60)
    instance, ids = platform.wait("a spare of the function", lambda: _spare(docker_client, "spare-e2e", node),
                                  timeout=30)
    assert platform.function("spare-e2e")["total"] == 0         # a spare is no instance

    status, body = platform.invoke("spare-e2e", json.dumps({"n": 2}).encode())
    assert status == 200 and json.loads(body)["event"] == {"n": 2}, body
    [second] = platform.function("spare-e2e")["instances"]
    assert second["id"] == instance                              # the scheduler gave it the spare's id
    running = {c["Id"]: c["State"] for c in _of(docker_client, "spare-e2e", node)}
    assert running[ids[0]] == "running" and running[ids[1]] == "running"   # started, in its sandbox

    platform.client.call("DELETE", "/v1/functions/spare-e2e")
    platform.wait("no container of the deleted function",
                  lambda: not _of(docker_client, "spare-e2e", node) or None, timeout=30)

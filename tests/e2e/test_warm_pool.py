"""The warm pool end to end: a function that scaled to zero is paused, not stopped, and its
next request is served by the same container, thawed, instead of a fresh start."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _container(docker_client, instance_id: str):
    found = docker_client.containers.list(all=True, filters={"label": f"gantry.instance={instance_id}"})
    assert len(found) == 1, found
    return found[0]


def test_scaled_to_zero_instance_is_paused_and_resumed_for_the_next_request(platform, kinds_build, docker_client):
    spec = kinds_build.spec.to_dict()
    spec["handler"] = "main:echo"
    spec["scaling"].update(idle_timeout="1s", keep_paused="60s")
    platform.deploy("warm-e2e", kinds_build.image, spec)

    t0 = time.perf_counter()
    status, body = platform.invoke("warm-e2e", json.dumps({"n": 1}).encode())
    cold = time.perf_counter() - t0
    assert status == 200 and json.loads(body)["event"] == {"n": 1}, body
    [first] = platform.function("warm-e2e")["instances"]

    paused = platform.wait("the idle instance paused",
                           lambda: [i for i in platform.function("warm-e2e")["instances"] if i["state"] == "paused"],
                           timeout=30)
    assert [i["id"] for i in paused] == [first["id"]]
    container = _container(docker_client, first["id"])
    assert container.status == "paused"
    started_at = container.attrs["State"]["StartedAt"]

    t0 = time.perf_counter()
    status, body = platform.invoke("warm-e2e", json.dumps({"n": 2}).encode())
    warm = time.perf_counter() - t0
    assert status == 200 and json.loads(body)["event"] == {"n": 2}, body
    print(f"\nfirst request (cold start): {cold * 1000:.0f} ms; "
          f"request to a scaled-to-zero, paused function: {warm * 1000:.0f} ms")

    instances = platform.function("warm-e2e")["instances"]
    assert [(i["id"], i["state"]) for i in instances] == [(first["id"], "ready")]   # resumed, nothing new
    container = _container(docker_client, first["id"])
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] == started_at                     # thawed, not restarted
    node = f"gantry.node={first['node']}"
    # one instance container: what the worker keeps made ahead of need (a created container
    # and its sandbox, worker/spares.py) is no instance
    found = docker_client.containers.list(all=True, filters={"label": ["gantry.function=warm-e2e", node]})
    assert [c.id for c in found if "gantry.sandbox" not in c.labels and c.status != "created"] == [container.id]
    resumed = [line for line in platform.logs().splitlines() if " resumed " in line]
    print("worker:", resumed[-1] if resumed else "(no resumed line)")

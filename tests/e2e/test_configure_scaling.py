"""configure_scaling end to end: on a deployed function that has scaled back to zero,
Client.configure_scaling(min_instances=1) registers a new version of the same image (no
build) and the scheduler brings an instance of it up with no invocation asking for one."""
from __future__ import annotations

import json

import pytest

from gantry import Client
from gantry.state import LIVE_STATES

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(240)]

NAME = "cfg-e2e"


def _live(fn: dict) -> list[dict]:
    return [i for i in fn["instances"] if i["state"] in LIVE_STATES]


def test_configure_scaling_brings_an_instance_up_without_a_rebuild(platform, kinds_build, docker_client):
    spec = kinds_build.spec.to_dict()
    spec["resources"].update(cpu=0.1, memory="64Mi")
    # scale to zero quickly after the first call, and stop (not pause) what is scaled down
    spec["scaling"].update(min_instances=0, max_instances=2, idle_timeout="1s", keep_paused="0s")
    assert platform.deploy(NAME, kinds_build.image, spec) == 1
    assert platform.invoke(NAME, json.dumps({"n": 1}).encode())[0] == 200      # the function runs ...
    platform.wait("scaled back to zero", lambda: not _live(platform.function(NAME)), timeout=60)  # ... then idles

    sdk = Client(platform.client.url, platform.client.api_key, timeout=60)
    images_before = {img.id for img in docker_client.images.list()}
    answer = sdk.configure_scaling(NAME, min_instances=1, scale_down_cooldown="30s")
    assert (answer["name"], answer["version"], answer["active"], answer["changed"]) == (NAME, 2, 1, True)
    assert answer["scaling"]["min_instances"] == 1 and answer["scaling"]["scale_down_cooldown"] == 30.0

    def v2_ready():
        fn = platform.function(NAME)
        ready = [i for i in fn["instances"] if i["state"] == "ready" and i["version"] == 2]
        return fn if fn["active"] == 2 and ready else None

    fn = platform.wait("an instance of version 2 ready, with no invocation", v2_ready, timeout=90)
    assert (fn["latest"], fn["active"], fn["image"]) == (2, 2, kinds_build.image)
    assert fn["spec"]["scaling"]["min_instances"] == 1
    # the same image runs it: nothing was built
    ready = next(i for i in fn["instances"] if i["state"] == "ready" and i["version"] == 2)
    containers = docker_client.containers.list(filters={"label": f"gantry.instance={ready['id']}"})
    assert [c.image.id for c in containers] == [docker_client.images.get(kinds_build.image).id]
    assert {img.id for img in docker_client.images.list()} == images_before
    # the scheduler says why: the new floor, not demand
    assert any("min_instances 1" in d["reason"] for d in sdk.decisions(NAME)), sdk.decisions(NAME)
    assert platform.invoke(NAME, json.dumps({"n": 2}).encode())[0] == 200

    # the same values again: no new version
    again = sdk.configure_scaling(NAME, min_instances=1)
    assert (again["version"], again["changed"]) == (2, False)
    assert sdk.versions(NAME) == (2, 2)

"""Deploy, invoke, scale, roll out and recover, through the gateway's HTTP API, with real
containers on the real engine and real Redis state."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from gantry.client import APIError, Client

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def spec_of(build, handler="main:echo", **scaling) -> dict:
    spec = build.spec.to_dict()
    spec["handler"] = handler
    spec["scaling"].update(scaling)
    return spec


def live(platform, name: str, states=("ready",)) -> list[dict]:
    return [i for i in platform.function(name)["instances"] if i["state"] in states]


def test_deploy_then_invoke_scaling_from_zero(platform, kinds_build):
    assert platform.deploy("hello-e2e", kinds_build.image, spec_of(kinds_build)) == 1
    assert live(platform, "hello-e2e") == []                      # min_instances = 0
    status, body = platform.invoke("hello-e2e", json.dumps({"x": 1}).encode())
    assert status == 200, body
    assert json.loads(body)["event"] == {"x": 1}
    assert len(live(platform, "hello-e2e")) == 1                  # started by the waiting request
    listed = {f["name"]: f for f in platform.client.call("GET", "/v1/functions")["functions"]}
    assert listed["hello-e2e"]["ready"] == 1


def test_errors_404_401_413(platform, kinds_build):
    platform.deploy("err-e2e", kinds_build.image, spec_of(kinds_build))
    status, body = platform.invoke("no-such-function")
    assert status == 404 and b"not_found" in body
    bad = Client(platform.client.url, "gk_wrong")
    with pytest.raises(APIError) as info:
        bad.call("GET", "/v1/functions")
    assert info.value.status == 401
    req = urllib.request.Request(f"{platform.client.url}/v1/invoke/err-e2e", data=b"x" * (7 * 2**20),
                                 headers={"Authorization": f"Bearer {platform.client.api_key}"})
    with pytest.raises(urllib.error.HTTPError) as http_info:
        urllib.request.urlopen(req, timeout=30)
    assert http_info.value.code == 413
    assert json.loads(http_info.value.read())["error"]["code"]


def _load(platform, name: str, payload: dict, threads: int, seconds: float, results: list, stop=None):
    def loop():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            results.append(platform.invoke(name, json.dumps(payload).encode()))
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    return workers


def test_scale_out_under_load_then_back_to_zero(platform, kinds_build):
    platform.deploy("burst-e2e", kinds_build.image,
                    spec_of(kinds_build, "main:slow", concurrency=1, max_instances=3, idle_timeout="2s",
                            keep_paused="0s"))             # no warm pool: zero means removed (test_warm_pool.py)
    results: list = []
    seen = set()
    workers = _load(platform, "burst-e2e", {"seconds": 0.4}, threads=5, seconds=8, results=results)
    while any(w.is_alive() for w in workers):
        seen.update(i["id"] for i in live(platform, "burst-e2e"))
        time.sleep(0.2)
    assert results and all(status == 200 for status, _ in results), results[:3]
    assert 2 <= len(seen) <= 3                                     # scaled out, never past max
    platform.wait("scale to zero", lambda: not platform.function("burst-e2e")["instances"], timeout=30)


def test_redeploy_under_load_fails_no_request(platform, kinds_build):
    spec = spec_of(kinds_build, "main:mark", min_instances=1)
    platform.deploy("roll-e2e", kinds_build.image, {**spec, "env": {"MARK": "v1"}})
    platform.wait("v1 ready", lambda: live(platform, "roll-e2e"))
    results: list = []
    stop = threading.Event()
    workers = _load(platform, "roll-e2e", {}, threads=3, seconds=40, results=results, stop=stop)
    time.sleep(1)
    assert platform.deploy("roll-e2e", kinds_build.image, {**spec, "env": {"MARK": "v2"}}) == 2
    platform.wait("v2 active", lambda: platform.function("roll-e2e")["active"] == 2, timeout=40)
    platform.wait("v1 drained", lambda: {i["version"] for i in platform.function("roll-e2e")["instances"]} == {2},
                  timeout=40)
    time.sleep(1)
    stop.set()
    for w in workers:
        w.join(30)
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    marks = [json.loads(body)["mark"] for _, body in results]
    assert marks[0] == "v1" and marks[-1] == "v2"


def test_killed_container_is_replaced(platform, kinds_build, docker_client):
    platform.deploy("kill-e2e", kinds_build.image, spec_of(kinds_build, min_instances=1))
    first = platform.wait("ready", lambda: live(platform, "kill-e2e"))[0]
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={first['id']}"})
    container.kill()
    replacement = platform.wait("replacement", lambda: [i for i in live(platform, "kill-e2e") if i["id"] != first["id"]])
    assert replacement
    assert platform.invoke("kill-e2e")[0] == 200


def test_killed_worker_node_is_replaced_on_a_live_node(platform, kinds_build):
    second = f"e2e-{platform.run_id}-n2"
    platform.worker(second)
    platform.wait("two nodes", lambda: len(platform.client.call("GET", "/v1/nodes")["nodes"]) == 2)
    platform.deploy("node-e2e", kinds_build.image, spec_of(kinds_build, min_instances=1))
    first = platform.wait("ready", lambda: live(platform, "node-e2e"))[0]
    platform.kill(first["node"])                                   # the agent dies; its node expires
    moved = platform.wait("instance on the other node",
                          lambda: [i for i in live(platform, "node-e2e") if i["node"] != first["node"]], timeout=60)
    assert moved
    assert [n["id"] for n in platform.client.call("GET", "/v1/nodes")["nodes"]] == [moved[0]["node"]]
    assert platform.invoke("node-e2e")[0] == 200

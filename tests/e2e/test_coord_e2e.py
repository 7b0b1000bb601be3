"""ctx.coord from inside real function containers: each invocation locks a conversation,
writes its state with the lock's fencing token and puts a follow-up on a queue; the test
reads everything back through the SDK.

The containers reach the gateway on the function network's bridge address (they cannot reach
the host's loopback), so this gateway listens there, and the worker tells instances where
(GANTRY_COORD_URL).  docs/coordination.md has the trade-off."""
from __future__ import annotations

import json
import os
import threading

import pytest

from gantry.build import build_function
from gantry.client import Client
from gantry.coord import Coord
from gantry.up import free_port
from gantry.worker.containers import ensure_network
from gantry.worker.containerspec import FUNCTION_NETWORK

from conftest import FAST_WORKER, Platform

pytestmark = [pytest.mark.docker, pytest.mark.redis]
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def bridge_platform(platform, docker_client):
    """The e2e platform, but with a gateway on the function network's bridge address and a
    worker that gives instances that address as GANTRY_COORD_URL."""
    network = docker_client.networks.get(ensure_network(docker_client, FUNCTION_NETWORK))
    bridge = network.attrs["IPAM"]["Config"][0]["Gateway"]
    for name in ("gateway", *[n for n in platform.procs if n.startswith("e2e-")]):
        platform.kill(name)
    port = free_port()
    url = f"http://{bridge}:{port}"
    platform.client = Client(url, platform.client.api_key, timeout=60)
    platform.start("gateway", "gateway", GANTRY_GATEWAY_HOST=bridge, GANTRY_GATEWAY_PORT=str(port),
                   GANTRY_COLD_START_TIMEOUT="45", GANTRY_ADMIN_RATE_LIMIT="0")
    platform.start(f"e2e-{platform.run_id}-n2", "worker", GANTRY_NODE_ID=f"e2e-{platform.run_id}-n2",
                   GANTRY_COORD_URL=url, **FAST_WORKER)
    platform.wait("gateway and node", lambda: platform.client.call("GET", "/v1/nodes")["nodes"], timeout=30)
    return platform


def test_ctx_coord_locks_writes_fenced_state_and_queues(bridge_platform, docker_client):
    p: Platform = bridge_platform
    build = build_function(docker_client, os.path.join(HERE, "coordfn"))
    spec = build.spec.to_dict()
    spec["scaling"].update({"max_instances": 2})
    p.deploy("coordfn", build.image, spec)
    results: list[tuple[int, bytes]] = []

    def call(i: int) -> None:
        payload = {"conversation": "c1" if i % 2 else "c2", "message": f"m{i}"}
        results.append(p.invoke("coordfn", json.dumps(payload).encode()))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [s for s, _ in results] == [200] * 8, results
    tokens = sorted(json.loads(b)["token"] for _, b in results)

    sdk = Coord(p.client.url, p.client.api_key)
    c1, c2 = sdk.get_state("conv/c1"), sdk.get_state("conv/c2")
    assert c1["turns"] == 4 and sorted(c1["messages"]) == ["m1", "m3", "m5", "m7"]     # no lost update
    assert c2["turns"] == 4 and sorted(c2["messages"]) == ["m0", "m2", "m4", "m6"]
    assert sdk.get_state("turns/total") == 8
    assert tokens == [1, 1, 2, 2, 3, 3, 4, 4]                       # per lock, every grant its own token
    followups = []
    while (item := sdk.get("followups", timeout=1)) is not None:
        followups.append(item.value)
        sdk.ack(item)
    assert sorted((f["conversation"], f["turn"]) for f in followups) == \
        sorted([("c1", n) for n in range(1, 5)] + [("c2", n) for n in range(1, 5)])
    sdk.close()

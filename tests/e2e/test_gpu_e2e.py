"""GPU placement through the whole platform on a machine without GPUs: a worker reporting fake
GPUs (GANTRY_FAKE_GPUS), the real scheduler, gateway, Redis and Docker engine.  This engine
has no NVIDIA runtime, so a container given a GPU cannot start: the test checks everything up
to the engine's refusal (the lease by UUID, the container's DeviceRequest naming that UUID,
the failure reported), and that every lease is given back."""
from __future__ import annotations

import time

import pytest
import redis

from gantry import keys, state
from gantry.client import APIError

# the e2e conftest's fast worker settings (heartbeat, health, node size), as Platform.worker uses
FAST_WORKER = {"GANTRY_HEARTBEAT_INTERVAL": "0.3", "GANTRY_HEARTBEAT_TTL": "1.5", "GANTRY_HEALTH_INTERVAL": "0.1",
               "GANTRY_DRAIN_GRACE": "5", "GANTRY_ORPHAN_INTERVAL": "1", "GANTRY_NODE_CPU": "8",
               "GANTRY_NODE_MEMORY": "8Gi"}

from test_cli import gantry
from test_platform import live, spec_of

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _gpu_leases(r, node: str) -> dict[str, int]:
    return {k.decode()[4:]: int(v) for k, v in r.hgetall(keys.node_alloc(node)).items()
            if k.startswith(b"gpu:") and int(v)}


def test_gpu_function_leases_a_fake_gpu_by_uuid_and_cpu_work_stays_off_it(platform, kinds_build, docker_client):
    r = redis.Redis.from_url(platform.redis_url)
    gpu_node = f"e2e-{platform.run_id}-gpu"
    platform.start(gpu_node, "worker", GANTRY_NODE_ID=gpu_node, GANTRY_FAKE_GPUS="NVIDIA L4:24Gi,NVIDIA L4:24Gi",
                   **FAST_WORKER)
    nodes = platform.wait("the GPU node", lambda: [n for n in platform.client.call("GET", "/v1/nodes")["nodes"]
                                                   if n["id"] == gpu_node])
    devices = nodes[0]["gpu_devices"]
    assert [d["name"] for d in devices] == ["NVIDIA L4", "NVIDIA L4"] and nodes[0]["cpu_work"] is False
    uuids = [d["uuid"] for d in devices]
    shown = gantry(platform, "nodes").stdout
    assert all(u in shown for u in uuids) and "0/24576 (24576)" in shown and "MEMORY MiB LEASED/TOTAL" in shown

    # what no node could hold is refused at deploy, naming what is missing
    with pytest.raises(APIError) as info:
        platform.deploy("h100-e2e", kinds_build.image,
                        {**spec_of(kinds_build), "resources": {"gpu": 1, "gpu_type": ["H100"], "memory": "128Mi"}})
    assert info.value.status == 400 and "no GPU of that type" in str(info.value) and "NVIDIA L4" in str(info.value)

    # CPU work goes to the CPU node only
    platform.deploy("cpu-e2e", kinds_build.image, spec_of(kinds_build, min_instances=2))
    ready = platform.wait("two CPU instances", lambda: len(live(platform, "cpu-e2e")) == 2 and live(platform, "cpu-e2e"))
    assert {i["node"] for i in ready} == {f"e2e-{platform.run_id}-n1"}

    # a share of one GPU: placed on the GPU node with a lease by UUID; the engine refuses the device
    platform.deploy("gpu-e2e", kinds_build.image,
                    {**spec_of(kinds_build, min_instances=1), "resources": {"gpu_memory": "4Gi", "memory": "128Mi"}})

    def leased_instance():
        for iid in r.smembers(keys.function_instances("gpu-e2e")):
            inst = state.Instance.from_hash(r.hgetall(keys.instance(iid.decode())))
            if inst and inst.gpu_lease:
                return inst
        return None

    inst = platform.wait("a GPU lease", leased_instance, timeout=30)
    assert inst.node == gpu_node and inst.gpu_lease in (f"{uuids[0]}={4 * 2**30}", f"{uuids[1]}={4 * 2**30}")

    def refused():
        fn = platform.function("gpu-e2e")
        return [i["reason"] for i in fn["instances"] if "start failed" in (i.get("reason") or "")]

    reasons = platform.wait("the engine's refusal reported", refused, timeout=60)
    assert "gpu" in reasons[0].lower()     # "could not select device driver ... capabilities: [[gpu]]"
    seen = [c for c in docker_client.containers.list(all=True, filters={"label": f"gantry.node={gpu_node}"})]
    for c in seen:      # a container made for the lease (if not yet removed) names the UUID, never a count
        requests = c.attrs["HostConfig"].get("DeviceRequests") or []
        assert requests and requests[0]["DeviceIDs"] == [inst.gpu_lease.split("=")[0]]
        assert c.labels.get("gantry.gpus", "").startswith(requests[0]["DeviceIDs"][0])

    platform.client.call("DELETE", "/v1/functions/gpu-e2e")
    platform.wait("every GPU lease given back", lambda: _gpu_leases(r, gpu_node) == {}
                  and not r.smembers(keys.function_instances("gpu-e2e")), timeout=60)
    time.sleep(0.5)
    assert _gpu_leases(r, gpu_node) == {}
    assert len(live(platform, "cpu-e2e")) == 2
    r.close()

"""GPU functions at the admin API: a deploy that no live node could ever hold is refused with
what is missing named; GET /v1/nodes shows each node's GPUs and what is leased of them."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state

from .support import AUTH, gateway, spec_dict

pytestmark = pytest.mark.timeout(60)
GiB = 2**30


def _node(r, node_id: str, devices: list[state.GpuDevice], cpu_work: int = 0) -> None:
    node = state.Node(id=node_id, host="127.0.0.1", cpu=4000, memory=16 * GiB, gpus=len(devices), started=time.time(),
                      gpu_inventory=state.GpuDevice.encode_list(devices), cpu_work=cpu_work)
    r.hset(keys.node(node_id), mapping=node.to_hash())
    r.sadd(keys.NODES, node_id)
    r.set(keys.node_alive(node_id), "1", ex=30)


async def _deploy(client, name: str, **resources):
    return await client.post("/v1/functions", json={"spec": spec_dict(name, resources=resources), "image": "img:1"},
                             headers=AUTH)


async def _refused(resp) -> str:
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == "bad_request"
    return body["error"]["message"]


async def test_a_gpu_function_no_live_node_can_hold_is_refused_at_deploy(redis_url, redis_client):
    async with gateway(redis_url) as client:
        msg = await _refused(await _deploy(client, "nothing", gpu=1))
        assert msg == "spec: resources: no live node can hold it: asked for 1 whole GPU, and no node is live"
        _node(redis_client, "cpu1", [], cpu_work=1)
        assert "none of the 1 live node(s) has a GPU" in await _refused(await _deploy(client, "llm", gpu=1))
        _node(redis_client, "g1", [state.GpuDevice("GPU-a", "NVIDIA L4", 24 * GiB, 24 * GiB),
                                   state.GpuDevice("GPU-b", "NVIDIA L4", 24 * GiB, 24 * GiB)])
        msg = await _refused(await _deploy(client, "llm", gpu=3))
        assert "asked for 3 whole GPUs" in msg and "the most such GPUs on one node is 2" in msg
        msg = await _refused(await _deploy(client, "llm", gpu_memory="30Gi"))
        assert "30720 MiB of one GPU" in msg and "the largest such GPU has 24576 MiB (NVIDIA L4)" in msg
        msg = await _refused(await _deploy(client, "llm", gpu=1, gpu_type=["H100", "A100"]))
        assert "of type H100 or A100" in msg and "no GPU of that type" in msg and "NVIDIA L4" in msg
        assert not redis_client.exists(keys.FUNCTIONS)
        # what fits is deployed, leased GPUs or not (it waits for them, it is not refused)
        redis_client.hset(keys.node_alloc("g1"), mapping={"gpu:GPU-a": 24 * GiB, "gpu:GPU-b": 24 * GiB})
        for name, res in (("whole", {"gpu": 2, "gpu_type": ["l4"]}), ("share", {"gpu_memory": "10Gi"})):
            resp = await _deploy(client, name, **res)
            assert resp.status == 201, await resp.text()
        resp = await client.get("/v1/functions/share", headers=AUTH)
        got = (await resp.json())["spec"]["resources"]
        assert got["gpu_memory"] == 10 * GiB and got["gpu_type"] == [] and got["gpu"] == 0
        bad = await _refused(await _deploy(client, "both", gpu=1, gpu_memory="1Gi"))
        assert bad.startswith("spec: resources.gpu_memory: expected either gpu")


async def test_nodes_show_their_gpus_and_leases(redis_url, redis_client):
    devices = [state.GpuDevice("GPU-h", "NVIDIA H100 80GB HBM3", 80 * GiB, 70 * GiB, 12, 0, (501,)),
               state.GpuDevice("GPU-m", "NVIDIA A100 80GB PCIe", 80 * GiB, 80 * GiB, -1, 1, ())]
    _node(redis_client, "g1", devices)
    redis_client.hset(keys.node_alloc("g1"), mapping={"cpu": 500, "memory": GiB, "gpu:GPU-h": 10 * GiB})
    async with gateway(redis_url) as client:
        resp = await client.get("/v1/nodes", headers=AUTH)
        (node,) = (await resp.json())["nodes"]
    assert node["gpus"] == 2 and node["cpu_work"] is False
    h, m = node["gpu_devices"]
    assert h == {"uuid": "GPU-h", "name": "NVIDIA H100 80GB HBM3", "memory": 80 * GiB, "free": 70 * GiB,
                 "util": 12, "mig": 0, "procs": [501], "leased": 10 * GiB}
    assert m["mig"] == 1 and m["leased"] == 0 and m["util"] == -1
    from gantry.cli import gpu_row
    assert gpu_row(h) == ["GPU-h", "NVIDIA H100 80GB HBM3", "10240/81920 (71680)", "12%", "1"]
    assert gpu_row(m)[1:] == ["NVIDIA A100 80GB PCIe (MIG)", "0/81920 (81920)", "n/a", "0"]

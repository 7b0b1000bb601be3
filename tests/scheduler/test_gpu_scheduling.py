"""The scheduler with GPU functions: instances lease GPUs by UUID, the start command carries
the lease, shares pack onto one card, a function that must wait says why, and stopping an
instance gives its GPUs back."""
from __future__ import annotations

import pytest

from gantry import keys, state
from gantry.manifest import Resources
from gantry.scheduler import gpulease
from gantry.state import GpuDevice

from .fakes import GiB, FakeWorker, add_node, commands, delete_function, deploy, field, instances, scheduler, settle

pytestmark = pytest.mark.timeout(30)

L4 = [GpuDevice("GPU-l4-0", "NVIDIA L4", 24 * GiB, 24 * GiB), GpuDevice("GPU-l4-1", "NVIDIA L4", 24 * GiB, 24 * GiB)]


async def _leases(r, node_id: str) -> dict[str, int]:
    raw = await r.hgetall(keys.node_alloc(node_id))
    return {k.decode()[4:]: int(v) for k, v in raw.items() if k.startswith(b"gpu:") and int(v)}


async def test_gpu_instances_lease_by_uuid_and_give_it_back(aredis):
    r = aredis
    await add_node(r, "cpu1")                                   # a CPU node: never chosen for GPU work
    await add_node(r, "g1", gpu_devices=L4)
    await deploy(r, "small", min_instances=3, resources=Resources(cpu=0.5, memory=GiB, gpu_memory=6 * GiB))
    await deploy(r, "big", min_instances=1, resources=Resources(cpu=0.5, memory=GiB, gpu=1, gpu_type=("L4",)))
    s, w = scheduler(r), FakeWorker(r, "g1")
    await settle(s, [w, FakeWorker(r, "cpu1")])
    small, big = await instances(r, "small"), await instances(r, "big")
    assert len(small) == 3 and len(big) == 1 and {i.node for i in small + big} == {"g1"}
    # the whole GPU is one card, the three shares packed onto the other (best fit)
    (whole,) = gpulease.uuids(big[0].gpu_lease)
    (shared,) = {gpulease.uuids(i.gpu_lease)[0] for i in small}
    assert {whole, shared} == {"GPU-l4-0", "GPU-l4-1"} and big[0].gpus == 1
    assert all(i.gpu_lease == f"{shared}={6 * GiB}" for i in small)
    assert await _leases(r, "g1") == {shared: 18 * GiB, whole: 24 * GiB}
    starts = [c for c in w.handled if c["op"] == "start"]
    assert sorted(c["gpu_lease"] for c in starts) == sorted(i.gpu_lease for i in small + big)
    # no room for a fourth share of the card (6 GiB left) plus another whole GPU: it waits, saying why
    await deploy(r, "more", min_instances=1, resources=Resources(cpu=0.5, memory=GiB, gpu=1))
    await s._iteration()
    reason = await field(r, "more", "pending_reason")
    assert reason.startswith("no capacity: asked for 1 whole GPU; the GPUs that fit it are leased on g1")
    await delete_function(r, "big")
    await settle(s, [w])
    await settle(s, [w])
    assert await _leases(r, "g1") == {shared: 18 * GiB, whole: 24 * GiB}   # "more" took it
    (more,) = await instances(r, "more")
    assert more.gpu_lease == f"{whole}={24 * GiB}" and more.state == state.READY
    for name in ("small", "more"):
        await delete_function(r, name)
    await settle(s, [w])
    await settle(s, [w])
    assert await _leases(r, "g1") == {}
    alloc = await r.hgetall(keys.node_alloc("g1"))
    assert int(alloc[b"cpu"]) == 0 and int(alloc[b"memory"]) == 0


async def test_cpu_work_stays_off_a_gpu_node_unless_allowed(aredis):
    r = aredis
    await add_node(r, "g1", gpu_devices=L4, cpu_work=0)
    await deploy(r, "echo", min_instances=1)
    s = scheduler(r)
    await s._iteration()
    assert await instances(r, "echo") == []
    assert await field(r, "echo", "pending_reason") == (
        "no capacity: every one of the 1 live node(s) has GPUs and takes GPU instances only "
        "(GANTRY_GPU_NODE_CPU_WORK=1 on a worker lets it take CPU-only instances)")
    await add_node(r, "g2", gpu_devices=[GpuDevice("GPU-x", "NVIDIA L4", 24 * GiB)], cpu_work=1)
    await settle(s, [FakeWorker(r, "g2")])
    (inst,) = await instances(r, "echo")
    assert inst.node == "g2" and inst.gpu_lease == ""
    assert [c.get("gpu_lease") for c in await commands(r, "g2")] == []

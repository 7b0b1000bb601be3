"""The worker's GPU inventory against the fake NVML (worker/fakenvml.py) and the real pynvml
of this machine (no driver here: an empty inventory with the reason); the node record that
carries it; the container's GPUs by UUID; the per-GPU start lock."""
from __future__ import annotations

import asyncio
import logging

import pytest
from docker.types import DeviceRequest

from gantry import keys, state
from gantry.manifest import FunctionSpec, Resources
from gantry.store import Store
from gantry.worker import fakenvml
from gantry.worker.agent import WorkerAgent
from gantry.worker.containerspec import LABEL_GPUS, container_kwargs
from gantry.worker.fakenvml import FakeGpu, FakeNvml
from gantry.worker.gpus import GpuInventory
from gantry.worker.settings import SettingsError, WorkerSettings

GiB = 2**30


def test_reads_every_field_of_every_gpu():
    nvml = FakeNvml([FakeGpu("NVIDIA H100 80GB HBM3", 80 * GiB, used=10 * GiB, util=37, mig=0, pids=[4242, 77]),
                     FakeGpu("NVIDIA A100-SXM4-40GB", 40 * GiB, mig=1)])
    devices = GpuInventory(nvml).read()
    assert [d.name for d in devices] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    h100, a100 = devices
    assert h100.uuid == nvml.gpus[0].uuid and h100.uuid.startswith("GPU-")
    assert (h100.memory, h100.free, h100.util, h100.mig, h100.procs) == (80 * GiB, 70 * GiB, 37, 0, (4242, 77))
    assert a100.mig == 1
    assert nvml.initialised == 1
    inv = GpuInventory(nvml)
    inv.read()
    nvml.gpus[0].used, nvml.gpus[0].util = 50 * GiB, 90        # a heartbeat later
    refreshed = inv.read()[0]
    assert (refreshed.free, refreshed.util) == (30 * GiB, 90)
    assert nvml.initialised == 2                                 # one init per inventory, not per read


def test_unsupported_fields_are_unknown_not_failures(caplog):
    nvml = FakeNvml([FakeGpu("Tesla T4", 16 * GiB, mig=None, unsupported={"util", "procs"})])
    with caplog.at_level(logging.WARNING, "gantry.worker.gpus"):
        (t4,) = GpuInventory(nvml).read()
    assert (t4.util, t4.mig, t4.procs, t4.memory) == (-1, 0, (), 16 * GiB)
    assert caplog.records == []                 # NotSupported is normal: nothing logged


def test_no_driver_or_no_gpu_is_empty_with_the_reason_logged_once(caplog):
    inv = GpuInventory(FakeNvml(init_error=fakenvml.NVMLError_LibraryNotFound()))
    with caplog.at_level(logging.WARNING, "gantry.worker.gpus"):
        assert inv.read() == [] and inv.read() == []
    assert "NVML Shared Library Not Found" in inv.reason
    assert len([r for r in caplog.records if "no GPUs" in r.getMessage()]) == 1
    empty = GpuInventory(FakeNvml([]))
    assert empty.read() == [] and empty.reason == "NVML reports no GPU"


def test_a_lost_gpu_is_left_out_and_the_others_count(caplog):
    nvml = FakeNvml([FakeGpu("L4", 24 * GiB, lost=True), FakeGpu("L4", 24 * GiB)])
    with caplog.at_level(logging.WARNING, "gantry.worker.gpus"):
        devices = GpuInventory(nvml).read()
    assert [d.uuid for d in devices] == [nvml.gpus[1].uuid]
    assert any("GPU 0 left out" in r.getMessage() and "GPU is lost" in r.getMessage() for r in caplog.records)


def test_the_real_pynvml_on_this_machine_without_a_driver():
    inv = GpuInventory()            # imports pynvml (nvidia-ml-py is a dev dependency)
    devices = inv.read()
    # this machine has no NVIDIA driver: NVML does not load, and that is an empty inventory
    assert devices == [] and "NVML did not initialise" in inv.reason and "NVMLError" in inv.reason


def test_fake_gpus_setting():
    nvml = fakenvml.from_setting("H100:80Gi, L4:24Gi", seed="node-1")
    nvml.nvmlInit()
    assert [g.name for g in nvml.gpus] == ["H100", "L4"] and nvml.gpus[1].memory == 24 * GiB
    assert len({g.uuid for g in nvml.gpus}) == 2
    assert fakenvml.from_setting("H100:80Gi", seed="a").gpus[0].uuid != fakenvml.from_setting(
        "H100:80Gi", seed="b").gpus[0].uuid
    with pytest.raises(SettingsError, match="GANTRY_FAKE_GPUS: expected NAME:MEMORY"):
        WorkerSettings.from_env({"GANTRY_FAKE_GPUS": "H100"})
    with pytest.raises(SettingsError, match="GANTRY_FAKE_GPUS: 'H100:lots'"):
        WorkerSettings.from_env({"GANTRY_FAKE_GPUS": "H100:lots"})
    s = WorkerSettings.from_env({"GANTRY_FAKE_GPUS": "A100:40Gi", "GANTRY_GPU_NODE_CPU_WORK": "1"})
    assert s.fake_gpus == "A100:40Gi" and s.gpu_node_cpu_work is True
    assert WorkerSettings.from_env({}).gpu_node_cpu_work is False
    with pytest.raises(SettingsError, match="GANTRY_GPU_NODE_CPU_WORK"):
        WorkerSettings.from_env({"GANTRY_GPU_NODE_CPU_WORK": "yes please"})


async def test_the_node_record_carries_the_gpus_and_refreshes_them(aredis):
    nvml = FakeNvml([FakeGpu("NVIDIA H100 80GB HBM3", 80 * GiB, util=5), FakeGpu("NVIDIA L4", 24 * GiB)])
    agent = WorkerAgent(WorkerSettings(node_id="gnode", cpu_millis=2000, memory=4 * GiB), aredis, None,
                        master_key=None, nvml=nvml)
    await agent.heartbeat()
    (node,) = await Store(aredis).live_nodes()
    assert node.gpus == 2 and node.cpu_work == 0           # a GPU node takes no CPU-only work by default
    assert [d.name for d in node.gpu_devices] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]
    nvml.gpus[0].util, nvml.gpus[0].used = 88, 20 * GiB
    await agent.heartbeat()
    (node,) = await Store(aredis).live_nodes()
    assert (node.gpu_devices[0].util, node.gpu_devices[0].free) == (88, 60 * GiB)
    raw = await aredis.hget(keys.node("gnode"), "gpu_inventory")
    assert len(raw) < 400                                  # compact: two GPUs in a few hundred bytes
    plain = WorkerAgent(WorkerSettings(node_id="cnode", cpu_millis=2000, memory=4 * GiB), aredis, None,
                        master_key=None, nvml=FakeNvml(init_error=fakenvml.NVMLError_DriverNotLoaded()))
    assert plain.node.gpus == 0 and plain.node.cpu_work == 1 and plain.node.gpu_inventory == ""
    allowed = WorkerAgent(WorkerSettings(node_id="anode", fake_gpus="L4:24Gi", gpu_node_cpu_work=True), aredis,
                          None, master_key=None)
    assert allowed.node.gpus == 1 and allowed.node.cpu_work == 1
    for a in (agent, plain, allowed):
        a._pool.shutdown(wait=False)


def _spec(**res) -> FunctionSpec:
    return FunctionSpec(name="llm", handler="main:handle", resources=Resources(**res))


def test_container_kwargs_give_the_leased_gpus_by_uuid_and_none_otherwise():
    lease = "GPU-aaa=85899345920,GPU-bbb=85899345920"
    kw = container_kwargs(_spec(gpu=2), "img", "i1", key="k", network="net", gpu_lease=lease)
    assert kw["device_requests"] == [DeviceRequest(device_ids=["GPU-aaa", "GPU-bbb"], capabilities=[["gpu"]])]
    assert "Count" not in kw["device_requests"][0] or not kw["device_requests"][0]["Count"]   # ids, never a count
    assert kw["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-aaa,GPU-bbb"
    assert kw["labels"][LABEL_GPUS] == lease
    share = container_kwargs(_spec(gpu_memory=10 * GiB), "img", "i2", key="k", network="net",
                             gpu_lease="GPU-ccc=10737418240")
    assert share["device_requests"][0]["DeviceIDs"] == ["GPU-ccc"]
    cpu = container_kwargs(_spec(), "img", "i3", key="k", network="net")
    assert "device_requests" not in cpu and LABEL_GPUS not in cpu["labels"]
    assert cpu["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    # the function's own env cannot widen what it sees
    spec = FunctionSpec(name="x", handler="main:handle", env={"NVIDIA_VISIBLE_DEVICES": "all"})
    assert container_kwargs(spec, "img", "i4", key="k", network="net")["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"


async def test_starts_on_one_gpu_are_serialised_and_other_gpus_are_not(aredis):
    agent = WorkerAgent(WorkerSettings(node_id="lnode", fake_gpus="L4:24Gi,L4:24Gi"), aredis, None, master_key=None)
    order: list[str] = []

    async def start(name: str, gpus: list[str], hold: float) -> None:
        async with agent.gpu_starts(gpus):
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    await asyncio.gather(start("a", ["G0"], 0.05), start("b", ["G0"], 0.0), start("c", ["G1"], 0.0),
                         start("d", ["G1", "G0"], 0.0))
    assert order.index("a-") < order.index("b+")           # b waited for a on G0
    assert order.index("c-") < order.index("a-")           # c, on G1 only, did not
    assert order.index("d+") > order.index("b-") or order.index("d-") < order.index("b+")
    assert not agent.gpu_starting("G0") and not agent.gpu_starting("G1")
    agent._pool.shutdown(wait=False)


def test_node_record_round_trip():
    devices = [state.GpuDevice("GPU-1", "NVIDIA L4", 24 * GiB, 20 * GiB, 3, 0, (1, 2))]
    node = state.Node(id="n", host="h", cpu=1000, memory=GiB, gpus=1, gpu_inventory=state.GpuDevice.encode_list(devices),
                      cpu_work=0)
    back = state.Node.from_hash({k.encode(): v.encode() for k, v in node.to_hash().items()})
    assert back == node and back.gpu_devices == devices
    old = state.Node.from_hash({b"id": b"o", b"cpu": b"1000", b"memory": b"1"})
    assert old.cpu_work == 1 and old.gpu_devices == []
    assert state.GpuDevice.decode_list("not json") == []


async def test_a_restarted_worker_reads_its_containers_gpu_leases_back(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec, caplog):
    """The leases are re-derived from the containers' gantry.gpus labels.  A container with a
    real DeviceRequest cannot start on this engine (no NVIDIA runtime), so the label is put on
    a CPU container: what register reads is the label."""
    from worker_helpers import agent_for, place

    from gantry.worker import containers
    from gantry.worker.containers import LABEL_NODE

    network = containers.ensure_network(docker_client, "gantry-fn")
    ids = []
    for lease in ("GPU-x0=1073741824", "GPU-x1=2147483648"):
        iid = place(redis_client, node_id)
        redis_client.hset(keys.instance(iid), mapping={"state": state.READY,
                                                        "gpu_lease": lease if not ids else "GPU-other=1"})
        kw = container_kwargs(kinds_spec, kinds_image, iid, key="k" * 32, network=network,
                              labels={LABEL_NODE: node_id, LABEL_GPUS: lease})
        kw.pop("detach")
        docker_client.containers.create(**kw).start()
        ids.append(iid)
    with caplog.at_level(logging.WARNING, "gantry.worker"):
        async with agent_for(redis_url, docker_client, node_id, fake_gpus="L4:24Gi,L4:24Gi") as agent:
            await agent.register()
            assert agent.gpu_leases == {ids[0]: "GPU-x0=1073741824", ids[1]: "GPU-x1=2147483648"}
    # the second container's record says another GPU: both are logged, the container keeps its own
    assert any(ids[1] in r.getMessage() and "GPU-other=1" in r.getMessage() for r in caplog.records)
    assert not any(ids[0] in r.getMessage() for r in caplog.records if "holds GPUs" in r.getMessage())


def test_gantry_up_lets_its_one_node_take_cpu_work_unless_told_not_to(monkeypatch):
    from gantry.up import read_settings
    monkeypatch.delenv("GANTRY_GPU_NODE_CPU_WORK", raising=False)
    assert read_settings("127.0.0.1", 8000, "one")[0].gpu_node_cpu_work is True
    monkeypatch.setenv("GANTRY_GPU_NODE_CPU_WORK", "0")
    assert read_settings("127.0.0.1", 8000, "one")[0].gpu_node_cpu_work is False

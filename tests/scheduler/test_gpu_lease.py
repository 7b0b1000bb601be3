"""GPU leases by UUID: the pure decision (scheduler/gpulease.py), its Lua twin
(keys.RESERVE_GPU_CAPACITY) on the real Redis, their agreement, fencing, quotas, release
once, and 1,000 concurrent placements on 4 GPUs with 0 double allocations and 0 leaks."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from gantry import keys, state
from gantry.scheduler import gpulease, placement
from gantry.scheduler.gpulease import GpuRequest, choose
from gantry.scheduler.placement import Request
from gantry.state import GpuDevice, Instance
from gantry.store import Deposed, Store
from gantry.tenants.quota import QuotaExceeded

from .fakes import GiB, MiB, add_node

pytestmark = pytest.mark.timeout(180)


def dev(uuid: str, name: str = "NVIDIA H100 80GB HBM3", memory: int = 80 * GiB, mig: int = 0) -> GpuDevice:
    return GpuDevice(uuid=uuid, name=name, memory=memory, free=memory, mig=mig)


H100 = [dev("h0"), dev("h1")]
MIXED = [dev("a0", "NVIDIA A100-SXM4-40GB", 40 * GiB), dev("h0"), dev("l0", "NVIDIA L4", 24 * GiB),
         dev("h1"), dev("m0", "NVIDIA A100 80GB PCIe", 80 * GiB, mig=1)]


# --- the pure decision ------------------------------------------------------------------

def test_whole_gpus_take_free_ones_of_the_best_type_in_order():
    assert choose(MIXED, {}, GpuRequest(count=1)) == [("a0", 40 * GiB)]
    assert choose(MIXED, {}, GpuRequest(count=2, types=("H100", "A100"))) == [("h0", 80 * GiB), ("h1", 80 * GiB)]
    # one H100 has a share on it: two H100s are no longer free, the next type is tried (one A100
    # free, the MIG one never): nothing
    assert choose(MIXED, {"h0": GiB}, GpuRequest(count=2, types=("H100", "A100"))) is None
    assert choose(MIXED, {"h0": GiB}, GpuRequest(count=1, types=("h100", "a100"))) == [("h1", 80 * GiB)]
    assert choose(MIXED, {"h0": GiB, "h1": 80 * GiB}, GpuRequest(count=1, types=("H100", "A100"))) == [
        ("a0", 40 * GiB)]
    assert choose(MIXED, {}, GpuRequest(count=1, types=("V100",))) is None


def test_shares_pack_best_fit_within_the_preferred_type():
    req = GpuRequest(memory=10 * GiB)
    assert choose(MIXED, {}, req) == [("l0", 10 * GiB)]                  # the smallest card that fits
    assert choose(MIXED, {"a0": 25 * GiB}, req) == [("a0", 10 * GiB)]   # 5 GiB left beats L4's 14
    assert choose(MIXED, {"l0": 20 * GiB, "a0": 35 * GiB}, req) == [("h0", 10 * GiB)]
    assert choose(MIXED, {}, GpuRequest(memory=10 * GiB, types=("H100",))) == [("h0", 10 * GiB)]
    assert choose(MIXED, {"h0": 75 * GiB}, GpuRequest(memory=10 * GiB, types=("H100",))) == [("h1", 10 * GiB)]
    assert choose(MIXED, {}, GpuRequest(memory=81 * GiB)) is None
    assert choose([dev("m", mig=1)], {}, GpuRequest(memory=GiB)) is None   # MIG: never leased


def test_lease_text_round_trip_and_reasons():
    lease = [("GPU-1", 80 * GiB), ("GPU-2", 5)]
    assert gpulease.decode(gpulease.encode(lease)) == lease
    assert gpulease.uuids("GPU-1=5,junk,GPU-2=7") == ["GPU-1", "GPU-2"]
    assert GpuRequest(memory=GiB).quota_gpus == 1 and GpuRequest(count=3).quota_gpus == 3
    why = gpulease.why_none_holds
    assert "no node is live" in why({}, GpuRequest(count=1))
    assert "none of the 1 live node(s) has a GPU" in why({"n": []}, GpuRequest(count=1))
    assert "no GPU of that type" in why({"n": MIXED}, GpuRequest(count=1, types=("V100",)))
    assert "NVIDIA L4" in why({"n": MIXED}, GpuRequest(count=1, types=("V100",)))
    assert "the most such GPUs on one node is 2" in why({"n": MIXED}, GpuRequest(count=3, types=("H100",)))
    assert "the largest such GPU has 81920 MiB" in why({"n": MIXED}, GpuRequest(memory=100 * GiB))
    assert "MIG" in why({"n": [dev("m", mig=1)]}, GpuRequest(count=1))
    assert why({"n": MIXED}, GpuRequest(count=2, types=("H100",))) == ""


def test_placement_messages_name_what_is_missing_or_leased():
    node = state.Node(id="g1", host="h", cpu=4000, memory=8 * GiB, gpus=2,
                      gpu_inventory=GpuDevice.encode_list(H100))
    req = Request(cpu=500, memory=MiB, gpus=1)
    assert placement.no_gpu_reason(req, [node], [{}]) == ""
    busy = placement.no_gpu_reason(req, [node], [{"h0": 80 * GiB, "h1": GiB}])
    assert "leased on g1" in busy and "1 whole GPU" in busy
    never = placement.no_gpu_reason(Request(cpu=500, memory=MiB, gpus=3), [node], [{}])
    assert never.startswith("no capacity: no live node can hold it") and "is 2" in never
    cpu_node = state.Node(id="c1", host="h", cpu=4000, memory=8 * GiB)
    assert "has a GPU" in placement.no_gpu_reason(req, [cpu_node], [{}])
    assert not placement.takes(cpu_node, req) and placement.takes(node, req)
    cpu_req = Request(cpu=500, memory=MiB)
    assert placement.takes(node, cpu_req)                     # cpu_work defaults to 1 (old records)
    assert not placement.takes(state.Node(id="g2", host="h", cpu=1, memory=1, gpus=1, cpu_work=0), cpu_req)


# --- the Lua twin on the real Redis ------------------------------------------------------

async def _lua(store: Store, node_id: str, req: GpuRequest, epoch: int = 1):
    return await store.reserve_gpus(epoch, node_id, 0, 0, req.count, req.memory, req.types)


async def test_lua_and_pure_decision_agree_on_random_cases(aredis):
    rng = random.Random(14)
    store = Store(aredis)
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA L4", "Tesla T4"]
    agreed = leased = 0
    for case in range(400):
        devices = [dev(f"G{case}-{i}", rng.choice(names), rng.choice([16, 24, 40, 80]) * GiB,
                       mig=int(rng.random() < 0.1)) for i in range(rng.randint(1, 5))]
        used = {d.uuid: rng.choice([0, 0, d.memory, rng.randint(1, d.memory)]) for d in devices}
        types = tuple(rng.sample(["H100", "a100", "L4", "T4"], rng.randint(0, 2)))
        req = (GpuRequest(count=rng.randint(1, 3), types=types) if rng.random() < 0.5
               else GpuRequest(memory=rng.choice([1, 5, 10, 20, 30]) * GiB, types=types))
        await aredis.flushdb()
        await add_node(aredis, "n", gpu_devices=devices)
        if any(used.values()):
            await aredis.hset(keys.node_alloc("n"), mapping={f"gpu:{u}": n for u, n in used.items() if n})
        expected = choose(devices, used, req)
        got = await _lua(store, "n", req)
        assert got == expected, (case, devices, used, req)
        agreed += 1
        leased += got is not None
    assert agreed == 400 and 50 < leased < 350     # both outcomes were exercised
    print(f"\nLua and pure decision agree on {agreed} random cases ({leased} leased)")


async def test_the_lease_is_fenced_by_the_leader_epoch_and_counted_for_the_tenant(aredis):
    store = Store(aredis)
    await add_node(aredis, "g", gpu_devices=H100)
    await aredis.set(keys.LEADER_EPOCH, 5)
    with pytest.raises(Deposed):
        await store.reserve_gpus(4, "g", 500, MiB, 1, 0)
    assert await aredis.hgetall(keys.node_alloc("g")) == {}
    await aredis.hset(keys.tenant_quota("acme"), "gpus", 1)
    lease = await store.reserve_gpus(5, "g", 500, MiB, 0, 10 * GiB, (), "acme")
    assert lease == [("h0", 10 * GiB)]
    with pytest.raises(QuotaExceeded):        # a share counts as one GPU against the quota
        await store.reserve_gpus(5, "g", 500, MiB, 0, 10 * GiB, (), "acme")
    assert int(await aredis.hget(keys.tenant_used("acme"), "gpus")) == 1
    assert int(await aredis.hget(keys.node_alloc("g"), "gpu:h0")) == 10 * GiB


async def test_release_gives_the_lease_back_exactly_once(aredis):
    store = Store(aredis)
    await add_node(aredis, "g", gpu_devices=H100)
    lease = await store.reserve_gpus(1, "g", 500, MiB, 2, 0, (), "acme")
    assert [u for u, _ in lease] == ["h0", "h1"]
    assert await _lua(store, "g", GpuRequest(memory=GiB)) is None          # both whole: nothing left
    inst = Instance(id="i1", function="acme.f", version=1, node="g", cpu=500, memory=MiB, gpus=2,
                    tenant="acme", gpu_lease=gpulease.encode(lease))
    await aredis.hset(keys.instance("i1"), mapping=inst.to_hash())
    await store.reap(inst)
    await store.reap(inst)            # a repeat (a crash between the steps) releases nothing more
    alloc = {k.decode(): int(v) for k, v in (await aredis.hgetall(keys.node_alloc("g"))).items()}
    assert alloc == {"cpu": 0, "memory": 0}
    used = {k.decode(): int(v) for k, v in (await aredis.hgetall(keys.tenant_used("acme"))).items()}
    assert used == {"instances": 0, "cpu": 0, "memory": 0, "gpus": 0}
    assert await _lua(store, "g", GpuRequest(count=2)) is not None


async def test_place_gpu_takes_a_node_whose_gpus_fit_and_the_type_it_prefers(aredis):
    store = Store(aredis)
    await add_node(aredis, "cpu-only")
    await add_node(aredis, "a", gpu_devices=[dev("a0", "NVIDIA A100-SXM4-40GB", 40 * GiB)])
    await add_node(aredis, "h", gpu_devices=[dev("hh0")])
    nodes = await store.live_nodes()
    req = Request(cpu=500, memory=MiB, gpus=1, gpu_type=("H100", "A100"))
    first = await placement.place_gpu(store, 1, "f", nodes, req)
    assert first.node.id == "h" and first.lease == [("hh0", 80 * GiB)]
    second = await placement.place_gpu(store, 1, "f", nodes, req)
    assert second.node.id == "a"
    assert await placement.place_gpu(store, 1, "f", nodes, req) is None
    # CPU-only work skips a GPU node whose worker does not allow it
    await add_node(aredis, "strict", gpu_devices=[dev("s0")], cpu_work=0)
    cands = await placement.candidates(store, await store.live_nodes(), Request(cpu=100, memory=MiB))
    assert "strict" not in {c.id for c in cands} and "cpu-only" in {c.id for c in cands}


# --- 1,000 concurrent placements on 4 GPUs -------------------------------------------------

CONCURRENT = 1000
CONNECTIONS = 16
WHOLE = [dev("GPU-whole-0"), dev("GPU-whole-1")]                               # H100s: whole GPUs
SHARED = [dev("GPU-share-0", "NVIDIA L4", 24 * GiB), dev("GPU-share-1", "NVIDIA L4", 24 * GiB)]
TOTAL = {d.uuid: d.memory for d in WHOLE + SHARED}


def _requests(rng: random.Random) -> list[GpuRequest]:
    out = []
    for _ in range(CONCURRENT):
        x = rng.random()
        if x < 0.30:
            out.append(GpuRequest(count=1, types=("H100",)))
        elif x < 0.35:
            out.append(GpuRequest(count=2, types=("H100",)))
        elif x < 0.85:
            out.append(GpuRequest(memory=rng.choice([2, 4, 6, 8]) * GiB, types=("L4",)))
        else:      # a share of any GPU: lands on an L4 with room, else on an H100 (then not whole)
            out.append(GpuRequest(memory=rng.choice([4, 10]) * GiB))
    return out


async def test_a_thousand_concurrent_placements_on_four_gpus(aredis, new_aredis):
    rng = random.Random(1000)
    clients = [aredis, *(new_aredis() for _ in range(CONNECTIONS - 1))]
    await add_node(aredis, "gpu", cpu=10**9, memory=2**50, gpu_devices=WHOLE + SHARED)
    await aredis.set(keys.LEADER_EPOCH, 3)
    requests = _requests(rng)
    live: dict[str, list[tuple[str, int]]] = {}       # instance -> lease, while Redis holds it
    stats = {"placed": 0, "refused": 0, "double": 0, "peak": 0, "shared_h100": 0}
    deadline = time.monotonic() + 150

    def check() -> None:
        """No UUID whole in two live leases, no GPU's leases over its memory."""
        held: dict[str, int] = {}
        whole: dict[str, int] = {}
        for lease in live.values():
            for uuid, n in lease:
                held[uuid] = held.get(uuid, 0) + n
                whole[uuid] = whole.get(uuid, 0) + (n == TOTAL[uuid])
        for uuid, n in held.items():
            if n > TOTAL[uuid] or (whole[uuid] and len([1 for l in live.values() for u, _ in l if u == uuid]) > 1):
                stats["double"] += 1
        stats["peak"] = max(stats["peak"], len(live))

    # A refused placement waits for a release (a few waiters woken per release, oldest first;
    # at most 50 ms) rather than spinning: the test measures correctness, not a retry storm.
    freed = asyncio.Condition()

    async def one(i: int, req: GpuRequest) -> None:
        store = Store(clients[i % CONNECTIONS])
        while time.monotonic() < deadline:
            lease = await store.reserve_gpus(3, "gpu", 100, MiB, req.count, req.memory, req.types, "t")
            if lease is None:
                stats["refused"] += 1
                async with freed:
                    try:
                        await asyncio.wait_for(freed.wait(), 0.05)
                    except asyncio.TimeoutError:
                        pass
                continue
            iid = f"i{i}"
            live[iid] = lease
            stats["placed"] += 1
            stats["shared_h100"] += any(u.startswith("GPU-whole") and n < TOTAL[u] for u, n in lease)
            check()
            inst = Instance(id=iid, function="t.f", version=1, node="gpu", cpu=100, memory=MiB,
                            gpus=req.quota_gpus, tenant="t", gpu_lease=gpulease.encode(lease))
            await store.redis.hset(keys.instance(iid), mapping=inst.to_hash())
            await asyncio.sleep(rng.uniform(0, 0.004))
            del live[iid]                 # before Redis releases: `live` never holds more than Redis
            await store.reap(inst)
            async with freed:
                freed.notify(8)
            return

    started = time.monotonic()
    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    elapsed = time.monotonic() - started
    alloc = {k.decode(): int(v) for k, v in (await aredis.hgetall(keys.node_alloc("gpu"))).items()}
    used = {k.decode(): int(v) for k, v in (await aredis.hgetall(keys.tenant_used("t"))).items()}
    leaks = sum(1 for v in alloc.values() if v) + sum(1 for v in used.values() if v)
    print(f"\n{CONCURRENT} placements on 4 GPUs over {CONNECTIONS} connections in {elapsed:.1f}s: "
          f"placed {stats['placed']}, refused tries {stats['refused']}, peak live leases {stats['peak']}, "
          f"shares placed on an H100 {stats['shared_h100']}, double allocations {stats['double']}, "
          f"leaks {leaks} (alloc {alloc}, tenant {used})")
    assert stats["placed"] == CONCURRENT
    assert stats["double"] == 0
    assert leaks == 0 and not any(k.startswith("gpu:") for k in alloc)
    assert stats["peak"] > 4             # shares really packed several leases onto the cards
    assert await aredis.keys(keys.instance("*")) == []

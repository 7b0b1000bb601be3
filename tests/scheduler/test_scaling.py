"""Scaling through Scheduler._iteration with injected time, against the real Redis."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state

from .fakes import GiB, FakeWorker, add_node, commands, deploy, field, instances, report, scheduler, settle

pytestmark = pytest.mark.timeout(30)


async def test_min_instances_are_kept(aredis):
    r = aredis
    await add_node(r, "n1")
    spec = await deploy(r, "echo", min_instances=2, cpu=0.5, memory=256 * 2**20, concurrency=3)
    s = scheduler(r)
    await s._iteration()
    insts = await instances(r, "echo")
    assert len(insts) == 2
    for inst in insts:
        assert inst.state == state.PENDING and inst.node == "n1" and inst.version == 1
        assert (inst.cpu, inst.memory, inst.concurrency, inst.epoch) == (500, 256 * 2**20, 3, 1)
        assert await r.sismember(keys.node_instances("n1"), inst.id)
    cmds = await commands(r, "n1")
    assert [c["op"] for c in cmds] == ["start", "start"]
    assert cmds[0]["image"] == "gantry/echo:v1" and cmds[0]["spec"] == spec.to_dict()
    assert cmds[0]["function"] == "echo" and cmds[0]["version"] == 1 and cmds[0]["epoch"] == 1
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 1000
    w = FakeWorker(r, "n1")
    await settle(s, [w])
    assert [i.state for i in await instances(r, "echo")] == [state.READY] * 2
    assert await commands(r, "n1") == []          # steady: nothing more to do
    await r.hset(keys.function("echo"), "min_override", 3)   # gantry scale echo 3
    await settle(s, [w])
    assert [i.state for i in await instances(r, "echo")] == [state.READY] * 3


async def test_scale_from_zero_on_a_demand_report(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo")
    s = scheduler(r)
    await s._iteration()
    assert await instances(r, "echo") == []
    await report(r, "echo", waiting=1)
    await s._iteration()
    assert len(await instances(r, "echo")) == 1


async def test_scale_out_with_demand_up_to_max(aredis):
    r = aredis
    await add_node(r, "n1", cpu=16000, memory=64 * GiB)
    await deploy(r, "echo", concurrency=2, max_instances=4)
    s, w = scheduler(r), FakeWorker(r, "n1")
    now = time.time()
    await report(r, "echo", inflight=2, waiting=3, now=now)     # 5 / 2 -> 3
    await settle(s, [w], now)
    assert len(await instances(r, "echo", live_only=True)) == 3
    await report(r, "echo", inflight=8, waiting=100, now=now)
    await settle(s, [w], now)
    assert len(await instances(r, "echo", live_only=True)) == 4
    await report(r, "echo", inflight=8, waiting=0, now=now, gateway="gw2")   # still capped
    await settle(s, [w], now)
    assert len(await instances(r, "echo", live_only=True)) == 4


async def test_scale_down_to_zero_after_idle_timeout(aredis):
    r = aredis
    await add_node(r, "n1")
    # keep_paused 0: no warm pool, scaled-down instances are drained (test_warm_pool.py pauses)
    await deploy(r, "echo", concurrency=1, idle_timeout=10.0, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=3, now=t0)
    await settle(s, [w], t0)
    assert len(await instances(r, "echo", live_only=True)) == 3
    for t in (t0 + 1, t0 + 5, t0 + 9.9):                    # load falls to 1
        await report(r, "echo", inflight=1, now=t)
        await s._iteration(t)
        assert len(await instances(r, "echo", live_only=True)) == 3
    await report(r, "echo", inflight=0, now=t0 + 10.5)
    await s._iteration(t0 + 10.5)                              # window still holds want=1
    assert len(await instances(r, "echo", live_only=True)) == 1
    drained = [i for i in await instances(r, "echo") if i.state == state.DRAINING]
    assert len(drained) == 2 and all(i.reason == "scaled down" for i in drained)
    assert sorted(c["op"] for c in await commands(r, "n1")) == ["stop", "stop"]
    await report(r, "echo", inflight=0, now=t0 + 19.8)
    await s._iteration(t0 + 19.8)                              # want=1 was last seen at t0+9.9
    assert len(await instances(r, "echo", live_only=True)) == 1
    await report(r, "echo", inflight=0, now=t0 + 20)
    await s._iteration(t0 + 20)
    assert await instances(r, "echo", live_only=True) == []
    await w.step()
    await s._iteration(t0 + 20.1)                             # reaped: records and capacity gone
    assert await instances(r, "echo") == []
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 0
    assert await r.scard(keys.node_instances("n1")) == 0


async def test_a_new_leader_scales_down_no_sooner_than_idle_timeout(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", concurrency=1, idle_timeout=10.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=2, now=t0)
    await settle(s, [w], t0)
    await s.close()
    s2 = scheduler(r, "s2")                  # knows nothing of the past demand
    await s2._iteration(t0 + 1)
    assert len(await instances(r, "echo", live_only=True)) == 2
    await s2._iteration(t0 + 11.5)
    assert len(await instances(r, "echo", live_only=True)) == 0


async def test_full_nodes_record_a_pending_reason(aredis):
    r = aredis
    await add_node(r, "n1", cpu=1000)
    await deploy(r, "echo", min_instances=3, cpu=0.5)
    s = scheduler(r)
    await s._iteration()
    assert len(await instances(r, "echo")) == 2
    reason = await field(r, "echo", "pending_reason")
    assert reason.startswith("no capacity") and "0.5 CPU" in reason
    await add_node(r, "n2", cpu=1000)
    await s._iteration()
    insts = await instances(r, "echo")
    assert sorted(i.node for i in insts) == ["n1", "n1", "n2"]
    assert await field(r, "echo", "pending_reason") is None


async def test_no_live_nodes_is_a_pending_reason_too(aredis):
    r = aredis
    await deploy(r, "echo", min_instances=1)
    await scheduler(r)._iteration()
    assert "no live nodes" in await field(r, "echo", "pending_reason")

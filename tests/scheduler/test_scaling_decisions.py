"""The scaling policy through Scheduler passes against the real Redis: target utilization,
cooldowns kept across a leader change, the warm hold, and the recorded decisions."""
from __future__ import annotations

import json
import time

import pytest

from gantry import keys
from gantry.scheduler.decisions import DecisionStore

from .fakes import GiB, FakeWorker, add_node, deploy, field, instances, report, scheduler, settle

pytestmark = pytest.mark.timeout(30)


async def decisions(r, name: str) -> list[dict]:
    return await DecisionStore(r).last(name)


async def live(r, name: str) -> int:
    return len(await instances(r, name, live_only=True))


async def test_target_utilization_sizes_instances_and_the_reason_is_recorded(aredis):
    r = aredis
    await add_node(r, "n1", cpu=16000, memory=64 * GiB)
    await deploy(r, "echo", concurrency=4, target_utilization=0.8, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    now = time.time()
    await report(r, "echo", inflight=6, waiting=4, now=now)       # 10 / (4 x 0.8) -> 4
    await settle(s, [w], now)
    assert await live(r, "echo") == 4
    [last] = await decisions(r, "echo")
    assert (last["from"], last["to"]) == (0, 4)
    assert last["reason"] == "scale up 0->4: 10 in flight / (4 x 0.8)"
    assert abs(last["time"] - now) < 1
    assert (await field(r, "echo", "scale_target"), float(await field(r, "echo", "scaled_up_at"))) == ("4", now)


async def test_scale_up_cooldown_holds_then_lets_go_and_survives_a_leader_change(aredis):
    r = aredis
    await add_node(r, "n1", cpu=16000, memory=64 * GiB)
    await deploy(r, "echo", concurrency=1, scale_up_cooldown=30.0, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=2, now=t0)
    await settle(s, [w], t0)
    assert await live(r, "echo") == 2
    await report(r, "echo", inflight=5, now=t0 + 10)
    await settle(s, [w], t0 + 10)
    assert await live(r, "echo") == 2                              # held: 20 s left
    held, up = await decisions(r, "echo")
    assert held["reason"] == "held by scale_up_cooldown (20s left): want 5, 5 in flight / (1 x 1)"
    assert (held["from"], held["to"], held["held"]) == (2, 2, "scale_up_cooldown")
    assert up["reason"] == "scale up 0->2: 2 in flight / (1 x 1)"
    await s.close()                                                # a new leader remembers the cooldown
    s2 = scheduler(r, "s2")
    await report(r, "echo", inflight=5, now=t0 + 20)
    await settle(s2, [w], t0 + 20)
    assert await live(r, "echo") == 2
    await report(r, "echo", inflight=5, now=t0 + 31)
    await settle(s2, [w], t0 + 31)
    assert await live(r, "echo") == 5
    assert (await decisions(r, "echo"))[0]["reason"] == "scale up 2->5: 5 in flight / (1 x 1)"


async def test_scale_down_cooldown_counts_from_the_last_change(aredis):
    r = aredis
    await add_node(r, "n1", cpu=16000, memory=64 * GiB)
    await deploy(r, "echo", concurrency=1, idle_timeout=0.0, scale_down_cooldown=60.0, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=3, now=t0)
    await settle(s, [w], t0)
    assert await live(r, "echo") == 3
    await report(r, "echo", inflight=0, now=t0 + 48)
    await settle(s, [w], t0 + 48)
    assert await live(r, "echo") == 3
    assert (await decisions(r, "echo"))[0]["reason"].startswith("held by scale_down_cooldown (12s left): want 0")
    await report(r, "echo", inflight=0, now=t0 + 61)
    await settle(s, [w], t0 + 61)
    assert await live(r, "echo") == 0
    assert (await decisions(r, "echo"))[0]["reason"] == "scale down 3->0: 0 in flight / (1 x 1)"
    assert len(await decisions(r, "echo")) == 3                   # up, held once, down


async def test_warm_holds_n_instances_until_it_ends(aredis):
    r = aredis
    await add_node(r, "n1", cpu=16000, memory=64 * GiB)
    await deploy(r, "echo", max_instances=5, idle_timeout=0.0, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await r.hset(keys.function("echo"), mapping={"warm": 3, "warm_until": t0 + 60})   # gantry warm echo 3 --for 1m
    await settle(s, [w], t0)
    assert await live(r, "echo") == 3
    assert (await decisions(r, "echo"))[0]["reason"] == "scale up 0->3: warm 3"
    await settle(s, [w], t0 + 59)
    assert await live(r, "echo") == 3
    await settle(s, [w], t0 + 61)
    assert await live(r, "echo") == 0


async def test_decisions_are_capped_and_removed_with_the_function(aredis):
    from gantry.store import Store

    r = aredis
    await add_node(r, "n1", cpu=16000, memory=64 * GiB)
    await deploy(r, "echo", concurrency=1, idle_timeout=0.0, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    for i in range(keys.MAX_DECISIONS + 5):
        await report(r, "echo", inflight=i % 2, now=t0 + i)
        await s._iteration(t0 + i)
    assert await r.llen(keys.function_decisions("echo")) == keys.MAX_DECISIONS
    newest = json.loads(await r.lindex(keys.function_decisions("echo"), 0))
    assert newest["time"] == round(t0 + keys.MAX_DECISIONS + 4, 3)
    assert await Store(r).delete_function("echo")
    assert not await r.exists(keys.function_decisions("echo"))

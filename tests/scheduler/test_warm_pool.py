"""The warm pool: scale-down pauses, scale-up resumes before placing, old paused instances
are drained; rollout, delete and dead nodes as before.  ``plan`` directly, then through
Scheduler._iteration with injected time against the real Redis and the FakeWorker."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state
from gantry.scheduler import writes
from gantry.scheduler.reaper import RESEND, triage
from gantry.store import Deposed, Store
from gantry.scheduler.reconcile import plan
from gantry.state import Instance

from .fakes import (FakeWorker, add_node, commands, delete_function, deploy, field, instances,
                    kill_node, report, scheduler, settle)

pytestmark = pytest.mark.timeout(30)

NOW = 1000.0


def inst(id_: str, st: str = state.READY, version: int = 1, created: float = 0.0, paused_at: float = 0.0,
         epoch: int = 1) -> Instance:
    return Instance(id=id_, function="f", version=version, node="n1", state=st, created=created,
                    paused_at=paused_at, epoch=epoch)


def ids(found) -> list[str]:
    return [i.id for i in found]


# --- plan: pure --------------------------------------------------------------------------


def test_plan_scale_to_zero_pauses_ready_and_drains_what_serves_nobody():
    insts = [inst("a", created=1), inst("b", created=2), inst("p", state.PENDING, created=3),
             inst("u", state.UNHEALTHY, created=4)]
    out = plan(1, 1, 0, 0, 10, insts, keep_paused=60, now=NOW)
    assert sorted(ids(out.pause)) == ["a", "b"]
    assert sorted(ids(out.drain)) == ["p", "u"]
    assert out.start == {} and out.resume == [] and out.expire == []
    off = plan(1, 1, 0, 0, 10, insts, keep_paused=0, now=NOW)            # 0s: no pausing
    assert off.pause == [] and sorted(ids(off.drain)) == ["a", "b", "p", "u"]


def test_plan_scale_down_pauses_the_newest_ready_and_keeps_the_rest():
    insts = [inst("old", created=1), inst("mid", created=2), inst("new", created=3)]
    out = plan(1, 1, 2, 0, 10, insts, keep_paused=60, now=NOW)
    assert ids(out.pause) == ["new"] and out.drain == []


def test_plan_scale_up_resumes_paused_newest_first_before_placing():
    pool = [inst("p1", state.PAUSED, paused_at=NOW - 30), inst("p2", state.PAUSED, paused_at=NOW - 10),
            inst("p3", state.PAUSING, paused_at=NOW - 1)]
    out = plan(1, 1, 1, 1, 10, pool, keep_paused=60, now=NOW)
    assert ids(out.resume) == ["p3"] and out.start == {}
    out = plan(1, 1, 2, 1, 10, pool, keep_paused=60, now=NOW)
    assert ids(out.resume) == ["p3", "p2"] and out.start == {}
    out = plan(1, 1, 5, 5, 10, pool + [inst("r")], keep_paused=60, now=NOW)
    assert ids(out.resume) == ["p3", "p2", "p1"] and out.start == {1: 1}  # 1 ready + 3 resumed + 1 new
    steady = plan(1, 1, 1, 0, 10, [inst("r"), *pool], keep_paused=60, now=NOW)
    assert steady.resume == [] and steady.start == {} and steady.drain == [] and steady.pause == []


def test_plan_resuming_counts_as_live():
    out = plan(1, 1, 1, 1, 10, [inst("r", state.RESUMING), inst("p", state.PAUSED, paused_at=NOW)],
               keep_paused=60, now=NOW)
    assert out.resume == [] and out.start == {} and out.pause == []
    down = plan(1, 1, 0, 0, 10, [inst("r", state.RESUMING)], keep_paused=60, now=NOW)
    assert ids(down.pause) == ["r"]


def test_plan_expired_paused_instances_are_drained_not_resumed():
    pool = [inst("stale", state.PAUSED, paused_at=NOW - 61), inst("stuck", state.PAUSING, paused_at=NOW - 60),
            inst("fresh", state.PAUSED, paused_at=NOW - 59)]
    out = plan(1, 1, 0, 0, 10, pool, keep_paused=60, now=NOW)
    assert sorted(ids(out.expire)) == ["stale", "stuck"] and out.drain == [] and out.resume == []
    out = plan(1, 1, 2, 2, 10, pool, keep_paused=60, now=NOW)
    assert ids(out.resume) == ["fresh"] and out.start == {1: 1}
    assert sorted(ids(out.expire)) == ["stale", "stuck"]


def test_plan_rollout_drains_paused_instances_of_the_old_version():
    # nothing live of the active version: active moves at once, its paused pool is drained
    out = plan(1, 2, 1, 1, 10, [inst("p", state.PAUSED, paused_at=NOW)], keep_paused=60, now=NOW)
    assert out.promote and ids(out.drain) == ["p"] and out.start == {2: 1} and out.resume == []
    # a rollout under way: the old version is kept (and may resume) until the new one is ready
    insts = [inst("old", version=1), inst("p", state.PAUSED, paused_at=NOW), inst("new", state.STARTING, version=2)]
    out = plan(1, 2, 2, 2, 10, insts, keep_paused=60, now=NOW)
    assert not out.promote and ids(out.resume) == ["p"] and out.drain == [] and out.start == {2: 1}
    insts = [inst("old", version=1), inst("p", state.PAUSED, paused_at=NOW), inst("new", version=2)]
    out = plan(1, 2, 1, 1, 10, insts, keep_paused=60, now=NOW)
    assert out.promote and sorted(ids(out.drain)) == ["old", "p"] and out.pause == []


def test_plan_with_no_pausing_and_no_pool_is_what_it_was():
    insts = [inst("a", created=1), inst("b", created=2)]
    assert plan(1, 1, 1, 0, 10, insts) == plan(1, 1, 1, 0, 10, insts, keep_paused=0, now=NOW)
    assert ids(plan(1, 1, 1, 0, 10, insts).drain) == ["b"]


def test_triage_resends_pause_and_unpause_of_an_older_epoch():
    live = {"n1"}
    assert triage(inst("a", state.PAUSING, epoch=1), live, NOW, 2, 60) == RESEND
    assert triage(inst("a", state.RESUMING, epoch=1), live, NOW, 2, 60) == RESEND
    assert (writes.RESENT[state.PAUSING], writes.RESENT[state.RESUMING]) == ("pause", "unpause")
    assert triage(inst("a", state.PAUSING, epoch=2), live, NOW, 2, 60) is None
    assert triage(inst("a", state.PAUSED, epoch=1), live, NOW, 2, 60) is None
    assert triage(inst("a", state.PAUSED, epoch=1), set(), NOW, 2, 60) == "node_dead"


# --- through the scheduler, with Redis and the fake worker --------------------------------


async def test_scale_to_zero_pauses_then_demand_resumes_the_same_instance(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", concurrency=1, idle_timeout=10.0, keep_paused=60.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=2, now=t0)
    await settle(s, [w], t0)
    first = {i.id for i in await instances(r, "echo")}
    assert len(first) == 2
    await report(r, "echo", inflight=0, now=t0 + 10.5)
    await s._iteration(t0 + 10.5)
    pausing = await instances(r, "echo")
    assert [i.state for i in pausing] == [state.PAUSING] * 2
    assert all(i.paused_at == t0 + 10.5 and i.reason == "scaled down" and i.epoch == 1 for i in pausing)
    assert [c["op"] for c in await commands(r, "n1")] == ["pause", "pause"]
    await w.step()
    await s._iteration(t0 + 11)
    assert [i.state for i in await instances(r, "echo")] == [state.PAUSED] * 2
    assert await commands(r, "n1") == []
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 1000   # paused: capacity held

    await report(r, "echo", waiting=1, now=t0 + 20)                  # a request comes back
    await s._iteration(t0 + 20)
    cmds = await commands(r, "n1")
    assert [c["op"] for c in cmds] == ["unpause"]                    # no start: resumed instead
    [resuming] = [i for i in await instances(r, "echo") if i.state == state.RESUMING]
    assert cmds[0]["instance"] == resuming.id
    await w.step()
    await s._iteration(t0 + 20.1)
    after = await instances(r, "echo")
    assert {i.id for i in after} == first
    assert sorted(i.state for i in after) == [state.PAUSED, state.READY]
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 1000


async def test_paused_longer_than_keep_paused_is_drained_and_reaped(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", concurrency=1, idle_timeout=5.0, keep_paused=30.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=1, now=t0)
    await settle(s, [w], t0)
    await report(r, "echo", inflight=0, now=t0 + 6)
    await settle(s, [w], t0 + 6)
    [paused] = await instances(r, "echo")
    assert paused.state == state.PAUSED and paused.paused_at == t0 + 6
    await s._iteration(t0 + 35.9)
    assert (await instances(r, "echo"))[0].state == state.PAUSED
    await s._iteration(t0 + 36)
    [drained] = await instances(r, "echo")
    assert drained.state == state.DRAINING and drained.reason == "paused longer than keep_paused (30s)"
    assert [c["op"] for c in await commands(r, "n1")] == ["stop"]
    await w.step()
    await s._iteration(t0 + 36.1)
    assert await instances(r, "echo") == []
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 0


async def test_keep_paused_zero_drains_on_scale_down(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", concurrency=1, idle_timeout=5.0, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "echo", inflight=1, now=t0)
    await settle(s, [w], t0)
    await report(r, "echo", inflight=0, now=t0 + 6)
    await s._iteration(t0 + 6)
    assert [i.state for i in await instances(r, "echo")] == [state.DRAINING]
    assert [c["op"] for c in await commands(r, "n1")] == ["stop"]


async def test_rollout_and_delete_drain_paused_instances(aredis):
    r = aredis
    await add_node(r, "n1")
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    for name in ("roll", "gone"):
        await deploy(r, name, concurrency=1, idle_timeout=5.0, keep_paused=60.0)
        await report(r, name, inflight=1, now=t0)
    await settle(s, [w], t0)
    for name in ("roll", "gone"):
        await report(r, name, inflight=0, now=t0 + 6)
    await settle(s, [w], t0 + 6)
    assert [i.state for i in await instances(r, "roll") + await instances(r, "gone")] == [state.PAUSED] * 2

    await deploy(r, "roll", 2, concurrency=1, idle_timeout=5.0, keep_paused=60.0)
    await delete_function(r, "gone")
    await s._iteration(t0 + 7)
    assert await field(r, "roll", "active") == "2"                     # nothing live: moved at once
    assert [(i.version, i.state, i.reason) for i in await instances(r, "roll")] == [
        (1, state.DRAINING, "replaced by a newer version")]
    [gone] = await instances(r, "gone")
    assert (gone.state, gone.reason) == (state.DRAINING, "function deleted")
    assert sorted(c["op"] for c in await commands(r, "n1")) == ["stop", "stop"]
    await w.step()
    await s._iteration(t0 + 7.1)
    assert await instances(r, "roll") == [] and await instances(r, "gone") == []


async def test_paused_instances_on_a_dead_node_are_reaped(aredis):
    r = aredis
    await add_node(r, "n1")
    await add_node(r, "n2")
    await deploy(r, "echo", concurrency=1, idle_timeout=5.0, keep_paused=60.0)
    s, w1, w2 = scheduler(r, node_dead_after=1.0), FakeWorker(r, "n1"), FakeWorker(r, "n2")
    t0 = time.time()
    await report(r, "echo", inflight=1, now=t0)
    await settle(s, [w1, w2], t0)
    await report(r, "echo", inflight=0, now=t0 + 6)
    await settle(s, [w1, w2], t0 + 6)
    [paused] = await instances(r, "echo")
    assert paused.state == state.PAUSED
    await kill_node(r, paused.node)
    await report(r, "echo", waiting=1, now=t0 + 7)
    await s._iteration(t0 + 7)                                 # suspect: kept
    assert [i.id for i in await instances(r, "echo")] == [paused.id]
    await s._iteration(t0 + 8.5)                               # dead
    [fresh] = await instances(r, "echo")                       # reaped, then one new placed
    assert fresh.id != paused.id and fresh.state == state.PENDING and fresh.node != paused.node


async def test_pause_and_resume_are_fenced(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", min_instances=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    await settle(s, [w])
    [ready] = await instances(r, "echo")
    await r.set(keys.LEADER_EPOCH, 5)
    store = Store(r)
    with pytest.raises(Deposed):                                       # a deposed leader: nothing
        await writes.pause(store, 4, ready, time.time())
    with pytest.raises(Deposed):
        await writes.resume(store, 4, ready)
    assert (await instances(r, "echo"))[0].state == state.READY and await commands(r, "n1") == []
    assert await writes.resume(store, 5, ready) is False               # not paused: refused
    assert await writes.pause(store, 5, ready, 123.0) is True
    [pausing] = await instances(r, "echo")
    assert (pausing.state, pausing.paused_at, pausing.epoch) == (state.PAUSING, 123.0, 5)
    assert await writes.pause(store, 5, ready, 124.0) is False         # already pausing
    assert await writes.resume(store, 5, ready) is True
    assert (await instances(r, "echo"))[0].state == state.RESUMING
    assert [(c["op"], c["epoch"]) for c in await commands(r, "n1")] == [("pause", 5), ("unpause", 5)]


async def test_a_new_leader_resends_pause_and_unpause(aredis, new_aredis):
    r1, r2 = aredis, new_aredis()
    await add_node(r1, "n1")
    await deploy(r1, "echo", concurrency=1, idle_timeout=5.0, keep_paused=60.0)
    old, w = scheduler(r1, "old"), FakeWorker(r1, "n1")
    t0 = time.time()
    await report(r1, "echo", inflight=2, now=t0)
    await settle(old, [w], t0)
    a, b = await instances(r1, "echo")
    await report(r1, "echo", inflight=0, now=t0 + 6)
    await old._iteration(t0 + 6)                                  # two pause commands, epoch 1
    await r1.delete(keys.node_commands("n1"))                     # ... lost (refused, say)
    await writes.resume(Store(r1), 1, a)                          # one resumed since, unsent too
    await r1.delete(keys.node_commands("n1"))
    await r1.delete(keys.LEADER)
    new = scheduler(r2, "new")
    await report(r1, "echo", waiting=1, now=t0 + 7)
    await new._iteration(t0 + 7)
    assert new.lease.epoch == 2
    assert sorted((c["op"], c["instance"], c["epoch"]) for c in await commands(r1, "n1")) == [
        ("pause", b.id, 2), ("unpause", a.id, 2)]
    await w.step()
    assert [c["epoch"] for c in w.handled[-2:]] == [2, 2]
    await new._iteration(t0 + 7.1)
    assert sorted(i.state for i in await instances(r1, "echo")) == [state.PAUSED, state.READY]

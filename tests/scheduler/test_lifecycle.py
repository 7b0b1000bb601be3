"""Reaping and replacement: failed instances, stuck starts, dead nodes, deleted functions."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state

from .fakes import (FakeWorker, add_node, commands, delete_function, deploy, instances,
                    kill_node, scheduler, set_state, settle)

pytestmark = pytest.mark.timeout(30)


async def test_failed_instance_is_reaped_and_replaced(aredis):
    r = aredis
    await add_node(r, "n1", cpu=1000)
    await deploy(r, "echo", min_instances=2)
    s, w = scheduler(r), FakeWorker(r, "n1")
    await settle(s, [w])
    before = {i.id for i in await instances(r, "echo")}
    victim = sorted(before)[0]
    await set_state(r, victim, state.FAILED, "exited with 137")
    await s._iteration()
    after = await instances(r, "echo")
    assert victim not in {i.id for i in after} and len(after) == 2
    assert not await r.exists(keys.instance(victim))
    ops = [(c["op"], c["instance"]) for c in await commands(r, "n1")]
    assert ("remove", victim) in ops and sum(op == "start" for op, _ in ops) == 1
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 1000     # released, re-reserved


async def test_crash_looping_version_backs_off(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "boom", min_instances=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    w.fail_starts = True
    t0 = time.time()
    starts = 0
    for i in range(6):                  # 6 passes within one second
        await s._iteration(t0 + i * 0.1)
        starts += sum(c["op"] == "start" for c in await w.step())
    assert starts == 2                  # the first failure is replaced at once ...
    await s._iteration(t0 + 1.3)        # ... the second after 1 s, then 2 s, 4 s ...
    assert sum(c["op"] == "start" for c in await w.step()) == 1
    await s._iteration(t0 + 2.0)
    assert sum(c["op"] == "start" for c in await w.step()) == 0
    w.fail_starts = False
    await s._iteration(t0 + 40)
    await w.step()
    await s._iteration(t0 + 40.1)
    assert [i.state for i in await instances(r, "boom")] == [state.READY]


async def test_stuck_pending_instance_times_out_and_is_replaced(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", min_instances=1)
    s = scheduler(r, start_timeout=60.0)
    t0 = time.time()
    await s._iteration(t0)
    [stuck] = await instances(r, "echo")
    await r.delete(keys.node_commands("n1"))        # the worker never saw it
    await s._iteration(t0 + 59)
    assert [i.id for i in await instances(r, "echo")] == [stuck.id]
    await s._iteration(t0 + 61)
    [fresh] = await instances(r, "echo")
    assert fresh.id != stuck.id and fresh.state == state.PENDING
    assert [(c["op"], c["instance"]) for c in await commands(r, "n1")] == [
        ("remove", stuck.id), ("start", fresh.id)]


async def test_dead_nodes_instances_are_replaced_on_a_live_node(aredis):
    r = aredis
    await add_node(r, "n1")
    await add_node(r, "n2")
    await deploy(r, "echo", min_instances=2)
    s = scheduler(r, node_grace=30.0, node_dead_after=10.0)
    w1, w2 = FakeWorker(r, "n1"), FakeWorker(r, "n2")
    t0 = time.time()
    await settle(s, [w1, w2], t0)
    placed = {i.node for i in await instances(r, "echo")}
    assert len(placed) == 1                  # the function's hash-ring node takes both (affinity)
    dead = placed.pop()
    live = "n2" if dead == "n1" else "n1"
    before = await instances(r, "echo")
    await kill_node(r, dead)
    await s._iteration(t0 + 1)               # heartbeat missed: suspect, nothing reaped or placed
    await s._iteration(t0 + 10.5)
    assert [(i.id, i.node, i.state) for i in await instances(r, "echo")] == \
        [(i.id, i.node, i.state) for i in before]
    assert int(await r.hget(keys.node_alloc(dead), "cpu")) == 1000
    await s._iteration(t0 + 11.5)            # dead_after passed: reaped and replaced
    insts = await instances(r, "echo")
    assert len(insts) == 2 and {i.node for i in insts} == {live}
    assert not await r.exists(keys.node_alloc(dead))
    assert await r.scard(keys.node_instances(dead)) == 0
    assert int(await r.hget(keys.node_alloc(live), "cpu")) == 1000
    assert await r.sismember(keys.NODES, dead)                        # not forgotten yet
    await s._iteration(t0 + 30)
    assert await r.sismember(keys.NODES, dead)
    await s._iteration(t0 + 42)
    assert not await r.sismember(keys.NODES, dead) and not await r.exists(keys.node(dead))
    assert await r.sismember(keys.NODES, live)


async def test_a_worker_back_within_dead_after_keeps_its_instances(aredis):
    """A heartbeat gap shorter than node_dead_after (a worker restart, a Redis blip) reaps
    nothing and places nothing: the same instances serve before, during and after."""
    r = aredis
    await add_node(r, "n1")
    await add_node(r, "n2")
    await deploy(r, "echo", min_instances=2)
    s = scheduler(r, node_dead_after=60.0)
    w1, w2 = FakeWorker(r, "n1"), FakeWorker(r, "n2")
    t0 = time.time()
    await settle(s, [w1, w2], t0)
    before = [(i.id, i.node, i.state) for i in await instances(r, "echo")]
    node = before[0][1]
    await kill_node(r, node)
    for dt in (1, 20, 45, 59):                               # down for 59 s
        await s._iteration(t0 + dt)
        assert [(i.id, i.node, i.state) for i in await instances(r, "echo")] == before
    await add_node(r, node)                                  # the restarted worker heartbeats
    await s._iteration(t0 + 70)                              # past dead_after, but alive again
    assert [(i.id, i.node, i.state) for i in await instances(r, "echo")] == before
    assert all(c["op"] != "stop" for c in await commands(r, node))


async def test_a_node_back_before_the_grace_is_kept(aredis):
    r = aredis
    await add_node(r, "n1")
    s = scheduler(r, node_grace=5.0)
    t0 = time.time()
    await kill_node(r, "n1")
    await s._iteration(t0)
    await add_node(r, "n1")                 # heartbeat again
    await s._iteration(t0 + 10)
    assert await r.sismember(keys.NODES, "n1")


async def test_deleted_functions_instances_are_drained_and_reaped(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "gone", min_instances=2)
    await deploy(r, "kept", min_instances=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    await settle(s, [w])
    await delete_function(r, "gone")
    await s._iteration()
    gone = await instances(r, "gone")
    assert [i.state for i in gone] == [state.DRAINING] * 2
    assert all(i.reason == "function deleted" for i in gone)
    assert sorted(c["op"] for c in await commands(r, "n1")) == ["stop", "stop"]
    await w.step()
    await s._iteration()
    assert await instances(r, "gone") == []
    assert [i.state for i in await instances(r, "kept")] == [state.READY]
    assert int(await r.hget(keys.node_alloc("n1"), "cpu")) == 500


async def test_an_instance_unhealthy_too_long_is_drained_and_replaced(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", min_instances=1)
    s, w = scheduler(r, unhealthy_timeout=10.0), FakeWorker(r, "n1")
    t0 = time.time()
    await settle(s, [w], t0)
    [sick] = await instances(r, "echo")
    await set_state(r, sick.id, state.UNHEALTHY, "3 failed health checks")
    await s._iteration(t0 + 1)
    await s._iteration(t0 + 10.5)                       # 9.5 s unhealthy: still given a chance
    assert [i.state for i in await instances(r, "echo")] == [state.UNHEALTHY]
    await set_state(r, sick.id, state.READY)      # recovered: the clock resets
    await s._iteration(t0 + 11)
    await set_state(r, sick.id, state.UNHEALTHY, "3 failed health checks")
    await s._iteration(t0 + 12)
    await s._iteration(t0 + 21.5)                       # 9.5 s since it turned unhealthy again
    assert [i.state for i in await instances(r, "echo")] == [state.UNHEALTHY]
    await s._iteration(t0 + 22.5)                       # 10.5 s: drained, a replacement started
    by_id = {i.id: i for i in await instances(r, "echo")}
    assert by_id[sick.id].state == state.DRAINING and by_id[sick.id].reason == "unhealthy for 10s"
    assert [i.state for i in by_id.values() if i.id != sick.id] == [state.PENDING]
    ops = [(c["op"], c["instance"]) for c in await commands(r, "n1")]
    assert ("stop", sick.id) in ops


async def test_a_lost_stop_command_is_sent_again_after_the_command_timeout(aredis):
    from gantry.scheduler.reaper import COMMAND_TIMEOUT

    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", min_instances=1, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await settle(s, [w], t0)
    [inst] = await instances(r, "echo")
    await delete_function(r, "echo")                              # no longer wanted: drained
    await s._iteration(t0 + 1)
    assert [i.state for i in await instances(r, "echo")] == [state.DRAINING]
    await r.delete(keys.node_commands("n1"))                      # the worker lost the stop
    await s._iteration(t0 + 2)                                    # first seen draining
    await s._iteration(t0 + 1 + COMMAND_TIMEOUT)
    assert await commands(r, "n1") == []                          # not yet: it may be draining
    await s._iteration(t0 + 2 + COMMAND_TIMEOUT)
    assert [(c["op"], c["instance"]) for c in await commands(r, "n1")] == [("stop", inst.id)]
    await s._iteration(t0 + 3 + COMMAND_TIMEOUT)
    assert len(await commands(r, "n1")) == 1                      # once per timeout, not every pass
    await w.step()
    await s._iteration(t0 + 4 + COMMAND_TIMEOUT)
    assert not await r.exists(keys.instance(inst.id))             # stopped and reaped


async def test_a_placed_instance_takes_the_nodes_spare_of_its_version(aredis):
    """The scheduler gives the next instance it places on a node the id of the node's
    container made ahead for that function and version (worker/spares.py), once."""
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", min_instances=1)
    await r.hset(keys.node_spares("n1"), "echo", "1:echo-made-ahead")
    await r.hset(keys.node_spares("n1"), "other", "1:other-made-ahead")
    s, w = scheduler(r), FakeWorker(r, "n1")
    await settle(s, [w])
    [inst] = await instances(r, "echo")
    assert inst.id == "echo-made-ahead"
    assert not await r.hexists(keys.node_spares("n1"), "echo")                 # taken
    assert await r.hget(keys.node_spares("n1"), "other") == b"1:other-made-ahead"
    # a spare of another version is not taken: the next instance gets an id of its own
    await r.hset(keys.node_spares("n1"), "echo", "7:echo-old")
    await deploy(r, "echo", min_instances=2)
    await settle(s, [w])
    ids = {i.id for i in await instances(r, "echo")}
    assert len(ids) == 2 and "echo-old" not in ids
    assert await r.hget(keys.node_spares("n1"), "echo") == b"7:echo-old"

"""Reclaim under pressure: the pure chooser, then the scheduler making room on a full node
(fake workers, real Redis): paused first, then idle instances above min_instances, least
recently used first; never a busy function, never below min_instances; and a reason that
names the shortfall when nothing can be freed."""
from __future__ import annotations

import time

import pytest

from gantry import state
from gantry.scheduler.reclaim import Holder, NodeRoom, choose
from gantry.state import Instance

from .fakes import FakeWorker, MiB, add_node, deploy, field, instances, report, scheduler, settle

pytestmark = pytest.mark.timeout(30)


def inst(id_, function, st, node="n1", cpu=500, memory=512 * MiB, paused_at=0.0, created=0.0):
    return Instance(id=id_, function=function, version=1, node=node, state=st, cpu=cpu, memory=memory,
                    paused_at=paused_at, created=created)


IDLE = Holder(busy=False, spare=1, last_request=100.0)


def test_paused_go_first_least_recently_paused_first():
    insts = [inst("p-new", "a", state.PAUSED, paused_at=20), inst("p-old", "b", state.PAUSED, paused_at=10),
             inst("r", "c", state.READY)]
    d = choose(500, 512 * MiB, "want", [NodeRoom("n1", 0, 0)], insts,
               {"a": IDLE, "b": IDLE, "c": IDLE})
    assert [v.id for v in d.victims] == ["p-old"] and d.node == "n1" and not d.waiting


def test_idle_ready_instances_least_recently_used_function_first():
    insts = [inst("recent", "a", state.READY), inst("stale", "b", state.READY)]
    holders = {"a": Holder(False, 1, last_request=200.0), "b": Holder(False, 1, last_request=100.0)}
    d = choose(500, 512 * MiB, "want", [NodeRoom("n1", 0, 0)], insts, holders)
    assert [v.id for v in d.victims] == ["stale"]


def test_never_a_busy_function_never_below_min_never_the_requester():
    insts = [inst("busy", "a", state.READY), inst("at-min", "b", state.READY),
             inst("mine", "want", state.READY), inst("mine-paused", "want", state.PAUSED)]
    holders = {"a": Holder(busy=True, spare=1, last_request=1.0), "b": Holder(busy=False, spare=0, last_request=1.0),
               "want": IDLE}
    d = choose(500, 512 * MiB, "want", [NodeRoom("n1", 0, 0)], insts, holders)
    assert d.victims == [] and d.node == "" and not d.waiting


def test_room_already_coming_means_waiting_not_more_victims():
    insts = [inst("leaving", "a", state.DRAINING), inst("idle", "b", state.READY)]
    d = choose(500, 512 * MiB, "want", [NodeRoom("n1", 0, 0)], insts, {"a": IDLE, "b": IDLE})
    assert d.waiting and d.victims == [] and d.node == "n1"


def test_the_node_needing_fewest_victims_is_chosen_and_both_resources_count():
    insts = [inst("a1", "a", state.PAUSED, node="n1", memory=256 * MiB, paused_at=1),
             inst("a2", "a", state.PAUSED, node="n1", memory=256 * MiB, paused_at=2),
             inst("b1", "b", state.PAUSED, node="n2", memory=512 * MiB, paused_at=3)]
    rooms = [NodeRoom("n1", 1000, 0), NodeRoom("n2", 1000, 0)]
    d = choose(500, 512 * MiB, "want", rooms, insts, {"a": IDLE, "b": IDLE})
    assert (d.node, [v.id for v in d.victims]) == ("n2", ["b1"])


async def test_a_full_node_stops_the_least_recently_used_idle_instance_and_places_the_new_one(aredis):
    r = aredis
    await add_node(r, "n1", cpu=1000, memory=8 * 1024 * MiB)      # room for two 0.5-CPU requests
    for name in ("old", "recent", "new"):
        await deploy(r, name, keep_paused=0.0)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "old", inflight=1, now=t0 - 20)                # used 20 s ago ...
    await settle(s, [w], t0 - 20)
    await report(r, "recent", inflight=1, now=t0 - 10)             # ... and 10 s ago: both idle now
    await settle(s, [w], t0 - 10)
    assert {i.function for i in await instances(r, "old") + await instances(r, "recent")} == {"old", "recent"}
    await report(r, "new", waiting=1, now=t0)                      # a request waits for "new"
    await settle(s, [w], t0)
    [placed] = await instances(r, "new")
    assert placed.state == state.READY
    assert [(i.state, i.reason) for i in await instances(r, "old")] == []   # least recently used: stopped
    assert [i.state for i in await instances(r, "recent")] == [state.READY]
    assert await field(r, "new", "pending_reason") is None


async def test_nothing_to_free_gives_a_reason_with_the_shortfall_written_once(aredis, caplog):
    r = aredis
    await add_node(r, "n1", cpu=1000, memory=8 * 1024 * MiB)
    await deploy(r, "a", min_instances=1)
    await deploy(r, "b", min_instances=1)
    await deploy(r, "c")
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await settle(s, [w], t0)
    await report(r, "c", waiting=1, now=t0)
    with caplog.at_level("WARNING", logger="gantry.scheduler.reconcile"):
        for k in range(5):
            await s._iteration(t0 + k * 0.1)
    reason = await field(r, "c", "pending_reason")
    assert reason.startswith("no capacity: asked for 0.5 CPU and 512 MiB memory")
    assert "0 CPU (n1)" in reason and "CPU is short" in reason
    assert sum("no capacity" in rec.getMessage() for rec in caplog.records) == 1
    assert len(await instances(r, "a")) == len(await instances(r, "b")) == 1   # min_instances kept


async def test_a_start_only_the_idle_window_wants_reclaims_nothing(aredis):
    """Without current demand (the idle window alone still holds a target) a start that fits
    nowhere stops nothing, paused instances included: it says no capacity instead."""
    from gantry.scheduler.placement import Request

    r = aredis
    await add_node(r, "n1", cpu=500, memory=8 * 1024 * MiB)           # room for one 0.5-CPU instance
    await deploy(r, "other", keep_paused=300.0, idle_timeout=5.0, concurrency=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    t0 = time.time()
    await report(r, "other", inflight=1, now=t0)
    await settle(s, [w], t0)
    await report(r, "other", inflight=0, now=t0 + 6)
    await settle(s, [w], t0 + 6)                                        # scaled down: paused
    [paused] = await instances(r, "other")
    assert paused.state == state.PAUSED
    nodes = await s.store.live_nodes()
    need = Request(cpu=500, memory=512 * MiB)
    reason = await s.reconciler._make_room("want", need, nodes, t0 + 7, s.lease.epoch, urgent=False)
    assert reason.startswith("no capacity") and [i.state for i in await instances(r, "other")] == [state.PAUSED]
    reason = await s.reconciler._make_room("want", need, nodes, t0 + 7, s.lease.epoch, urgent=True)
    assert reason.startswith("making room") and [i.state for i in await instances(r, "other")] == [state.DRAINING]

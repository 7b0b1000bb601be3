"""Versions: new instances first, `active` moves only once they are ready, old drained."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state
from gantry.scheduler import writes

from gantry.store import Store

from .fakes import FakeWorker, add_node, commands, deploy, field, instances, report, scheduler, set_state

pytestmark = pytest.mark.timeout(30)


async def _by_version(r, name):
    out: dict[int, list] = {}
    for inst in await instances(r, name, live_only=True):
        out.setdefault(inst.version, []).append(inst)
    return out


async def test_rollout_starts_new_then_moves_active_then_drains_old(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", 1, min_instances=2)
    s, w = scheduler(r), FakeWorker(r, "n1")
    await s._iteration()
    await w.step()
    await deploy(r, "echo", 2, min_instances=2)                    # latest=2, active=1
    await s._iteration()
    versions = await _by_version(r, "echo")
    assert len(versions[1]) == 2 and len(versions[2]) == 2
    assert [c["image"] for c in await commands(r, "n1")] == ["gantry/echo:v2"] * 2
    # one new instance ready: not enough
    first = await r.rpop(keys.node_commands("n1"))
    await set_state(r, state.unpack(first)["instance"], state.READY)
    await s._iteration()
    assert await field(r, "echo", "active") == "1"
    assert all(i.state == state.READY for i in (await _by_version(r, "echo"))[1])
    # both ready: active moves, the old version drains
    await w.step()
    await s._iteration()
    assert await field(r, "echo", "active") == "2"
    all_insts = await instances(r, "echo")
    assert sorted((i.version, i.state) for i in all_insts) == [
        (1, state.DRAINING), (1, state.DRAINING), (2, state.READY), (2, state.READY)]
    assert all(i.reason == "replaced by a newer version" for i in all_insts if i.version == 1)
    assert sorted(c["op"] for c in await commands(r, "n1")) == ["stop", "stop"]
    await w.step()
    await s._iteration()
    assert sorted(i.version for i in await instances(r, "echo")) == [2, 2]


async def test_rollout_under_load_starts_as_many_as_the_old_version_runs(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", 1, concurrency=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    now = time.time()
    await report(r, "echo", inflight=3, now=now)
    await s._iteration(now)
    await w.step()
    await report(r, "echo", inflight=1, now=now)       # load fell, the old version still runs 3
    await deploy(r, "echo", 2, concurrency=1)
    await s._iteration(now)
    assert len((await _by_version(r, "echo"))[2]) == 3


async def test_with_nothing_running_active_moves_at_once(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", 1)
    await deploy(r, "echo", 2)
    await scheduler(r)._iteration()
    assert await field(r, "echo", "active") == "2"
    assert await instances(r, "echo") == []


async def test_a_newer_deploy_wins_over_a_stale_promotion(aredis):
    r = aredis
    await deploy(r, "echo", 1)
    await deploy(r, "echo", 2)
    await deploy(r, "echo", 3)                       # landed after we decided on 2
    assert not await writes.promote(Store(r), 1, "echo", latest=2, active=1)
    assert await field(r, "echo", "active") == "1"
    assert await writes.promote(Store(r), 1, "echo", latest=3, active=1)
    assert await field(r, "echo", "active") == "3"
    await r.delete(keys.function("echo"))            # deleted meanwhile: not resurrected
    assert not await writes.promote(Store(r), 1, "echo", latest=3, active=3)
    assert not await r.exists(keys.function("echo"))


async def test_superseded_rollout_drains_the_middle_version(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo", 1, min_instances=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    await s._iteration()
    await w.step()
    await deploy(r, "echo", 2, min_instances=1)
    await s._iteration()                             # v2 pending
    await deploy(r, "echo", 3, min_instances=1)
    await s._iteration()
    insts = await instances(r, "echo")
    assert sorted((i.version, i.state) for i in insts) == [
        (1, state.READY), (2, state.DRAINING), (3, state.PENDING)]
    await w.step()
    await s._iteration()
    assert await field(r, "echo", "active") == "3"
    assert [i.version for i in await instances(r, "echo", live_only=True)] == [3]

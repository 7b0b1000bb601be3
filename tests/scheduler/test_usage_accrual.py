"""The scheduler leader charges an instance's reservation from its placement to its reap."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state
from gantry.usage.model import day_of

from .fakes import FakeWorker, add_node, deploy, instances, scheduler, set_state

pytestmark = pytest.mark.timeout(60)


async def test_an_instance_is_charged_from_placement_to_reap(aredis):
    r = aredis
    await add_node(r, "n1", cpu=4000)
    await deploy(r, "echo", min_instances=1, cpu=0.5)
    s, w = scheduler(r, accrue_interval=0.001), FakeWorker(r, "n1")
    t0 = time.time() - 100                 # placed 100 s ago, as the leader saw it
    await s._iteration(t0)
    await w.step()
    [inst] = await instances(r, "echo")
    assert inst.created == t0
    await s._iteration(t0 + 30)            # a pass 30 s after placement accrues 30 s
    bucket = keys.usage_day("default", day_of(t0 + 30))
    assert float(await r.hget(bucket, "echo|cpu_seconds")) == pytest.approx(15.0)       # 0.5 cores
    assert float(await r.hget(bucket, "echo|memory_gib_seconds")) == pytest.approx(15.0)  # 512 MiB
    await set_state(r, inst.id, state.STOPPED)
    s.accrual.interval = 3600.0            # the next periodic accrual is far off: only the reap's counts
    s.accrual._next = time.monotonic() + 3600.0
    before = time.time()
    await s._iteration(before)             # reaped: the last seconds are charged before the release
    after = time.time()
    assert not await r.exists(keys.instance(inst.id))
    charged = float(await r.hget(keys.usage_day("default", day_of(after)), "echo|cpu_seconds")) / 0.5
    if day_of(t0 + 30) != day_of(after):   # the run crossed midnight UTC: the earlier part is there
        charged += 30
    assert before - t0 - 1e-6 <= charged <= after - t0 + 1e-6

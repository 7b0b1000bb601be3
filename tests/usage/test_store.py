"""Usage buckets, reserved resource-second accrual and the audit stream in a real Redis."""
from __future__ import annotations

import asyncio
import time

import pytest

from gantry import keys, state
from gantry.scheduler.accrual import Accrual
from gantry.store import Store
from gantry.usage.model import day_of
from gantry.usage.store import AuditStore, UsageStore

pytestmark = pytest.mark.timeout(60)

GiB = 2**30


def _instance(inst_id: str, function: str, created: float, cpu: int = 500, memory: int = 2 * GiB,
              gpus: int = 0) -> state.Instance:
    inst = state.Instance(id=inst_id, function=function, version=1, node="n1", state=state.READY,
                          cpu=cpu, memory=memory, created=created)
    return inst, {**inst.to_hash(), **({"gpus": str(gpus)} if gpus else {})}


async def _write(aredis, inst, fields) -> None:
    await aredis.hset(keys.instance(inst.id), mapping=fields)
    await aredis.sadd(keys.node_instances(inst.node), inst.id)


async def _bucket(aredis, tenant: str, day: str) -> dict[str, float]:
    raw = await aredis.hgetall(keys.usage_day(tenant, day))
    return {k.decode(): float(v) for k, v in raw.items()}


async def test_accrual_counts_the_reservation_once_and_moves_accrued_at(aredis):
    store = UsageStore(aredis)
    now = time.time()
    inst, fields = _instance("i-1", "acme.fn", created=now - 100, gpus=1)
    await _write(aredis, inst, fields)
    assert await store.accrue(inst, now) == pytest.approx(100)
    day = day_of(now)
    got = await _bucket(aredis, "acme", day)
    assert got["fn|cpu_seconds"] == pytest.approx(50.0)        # 0.5 cores x 100 s
    assert got["fn|memory_gib_seconds"] == pytest.approx(200.0)  # 2 GiB x 100 s
    assert got["fn|gpu_seconds"] == pytest.approx(100.0)
    assert await store.accrue(inst, now) == 0                    # the same second is not counted again
    assert await store.accrue(inst, now - 5) == 0                # nor by a caller with an older clock
    assert await store.accrue(inst, now + 10) == pytest.approx(10)
    assert (await _bucket(aredis, "acme", day))["fn|cpu_seconds"] == pytest.approx(55.0)
    ttl = await aredis.ttl(keys.usage_day("acme", day))
    assert 399 * 86400 < ttl <= 400 * 86400
    # a record whose function is not what the caller read, and a released one, accrue nothing
    other = state.Instance(**{**inst.__dict__, "function": "other"})
    assert await store.accrue(other, now + 20) == 0
    await aredis.hset(keys.instance(inst.id), "released", "1")
    assert await store.accrue(inst, now + 30) == 0
    assert (await _bucket(aredis, "acme", day))["fn|cpu_seconds"] == pytest.approx(55.0)


async def test_two_concurrent_accrual_callers_never_double_count(aredis, new_aredis):
    created = time.time() - 50
    inst, fields = _instance("i-2", "solo", created=created, cpu=1000, memory=GiB)
    await _write(aredis, inst, fields)
    a, b = UsageStore(new_aredis()), UsageStore(new_aredis())

    async def caller(store: UsageStore) -> float:
        total = 0.0
        for _ in range(200):
            total += await store.accrue(inst)      # each with its own time.time()
        return total

    got_a, got_b = await asyncio.gather(caller(a), caller(b))
    assert got_a > 0 and got_b > 0                 # both really ran and both accrued some
    accrued_at = float(await aredis.hget(keys.instance(inst.id), "accrued_at"))
    # default tenant: the bucket key is the default tenant's, the field the bare name
    bucket = await _bucket(aredis, "default", day_of(accrued_at))
    assert got_a + got_b == pytest.approx(accrued_at - created, abs=1e-6)
    assert bucket["solo|cpu_seconds"] == pytest.approx(accrued_at - created, abs=1e-6)   # 1 core
    assert bucket["solo|memory_gib_seconds"] == pytest.approx(accrued_at - created, abs=1e-6)


async def test_reap_accrues_the_last_seconds_before_the_release(aredis):
    store = Store(aredis)
    created = time.time() - 30
    inst, fields = _instance("i-3", "acme.web", created=created, cpu=250, memory=GiB)
    await _write(aredis, inst, fields)
    await aredis.hset(keys.node_alloc("n1"), mapping={"cpu": 250, "memory": GiB})
    await UsageStore(aredis).accrue(inst, created + 20)       # the leader's last accrual
    before = time.time()
    await store.reap(inst)
    after = time.time()
    assert not await aredis.exists(keys.instance(inst.id))
    got = await _bucket(aredis, "acme", day_of(after))
    # 0.25 cores from created to the reap, whatever the leader had counted: nothing lost or twice
    assert before - created <= got["web|cpu_seconds"] / 0.25 <= after - created
    assert got["web|memory_gib_seconds"] == pytest.approx(got["web|cpu_seconds"] / 0.25, rel=1e-9)
    assert int(await aredis.hget(keys.node_alloc("n1"), "cpu")) == 0


async def test_the_leaders_accrual_runs_once_an_interval(aredis):
    now = time.time()
    inst, fields = _instance("i-4", "fn", created=now - 10, cpu=1000)
    await _write(aredis, inst, fields)
    accrual = Accrual(aredis, interval=3600)
    assert await accrual.maybe([inst], now) == 1
    assert await accrual.maybe([inst], now + 5) == 0          # not due: nothing written
    assert (await _bucket(aredis, "default", day_of(now)))["fn|cpu_seconds"] == pytest.approx(10)


async def test_usage_add_writes_every_tenant_in_one_step(aredis):
    store = UsageStore(aredis)
    counts = {("default", "echo"): {"invocations": 3, "errors": 1, "throttles": 0, "duration_seconds": 0.5},
              ("acme", "echo"): {"invocations": 2, "errors": 0, "throttles": 4, "duration_seconds": 0.25}}
    assert await store.add(counts, "2025-03-05") == 6        # zero counters are not written
    assert await store.add(counts, "2025-03-05") == 6
    d = await _bucket(aredis, "default", "2025-03-05")
    a = await _bucket(aredis, "acme", "2025-03-05")
    assert d == {"echo|invocations": 6, "echo|errors": 2, "echo|duration_seconds": 1.0}
    assert a == {"echo|invocations": 4, "echo|throttles": 8, "echo|duration_seconds": 0.5}
    assert await store.add({}, "2025-03-05") == 0


async def test_audit_read_filters_by_tenant_and_pages(aredis):
    audit = AuditStore(aredis)
    ids = []
    for i in range(7):
        ids.append(await audit.append(time_=1000.0 + i, actor=f"k{i}", tenant="acme" if i % 2 else "default",
                                      action="function.deploy", target=f"f{i}", detail={"version": i}))
    entries, cursor = await audit.read(None, None, 3)          # the latest three, oldest first
    assert [e["target"] for e in entries] == ["f4", "f5", "f6"] and cursor == ids[6]
    entries, cursor = await audit.read("acme", None, 10)
    assert [e["target"] for e in entries] == ["f1", "f3", "f5"]
    assert entries[0] == {"id": ids[1], "time": 1001.0, "actor": "k1", "tenant": "acme",
                          "action": "function.deploy", "target": "f1", "detail": {"version": 1}}
    entries, cursor = await audit.read("default", "0", 2)      # from the start, two at a time
    assert [e["target"] for e in entries] == ["f0", "f2"]
    entries, cursor = await audit.read("default", cursor, 2)
    assert [e["target"] for e in entries] == ["f4", "f6"]
    entries, cursor2 = await audit.read("default", cursor, 2)
    assert entries == [] and cursor2 == cursor

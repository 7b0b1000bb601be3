"""Tenant quotas in the control plane, on real Redis: functions counted by the deploy script,
instances/cpu/memory/gpus reserved with node capacity (both or neither) and released exactly
once, and a function its quota keeps from starting says so (pending_reason, pending_quota)."""
from __future__ import annotations

import asyncio

import pytest

from gantry import keys, state
from gantry.manifest import FunctionSpec, Resources, Scaling
from gantry.store import Store
from gantry.tenants.model import Quotas, Tenant
from gantry.tenants.quota import QuotaExceeded
from gantry.tenants.quotastore import QuotaStore
from gantry.tenants.store import TenantStore

from .fakes import GiB, MiB, FakeWorker, add_node, kill_node, scheduler


async def _tenant(r, tenant_id: str, **quotas) -> None:
    assert await TenantStore(r).put_tenant(Tenant(id=tenant_id, quotas=Quotas(**quotas)), create=True)


def _spec(name: str, tenant: str = "acme", cpu: float = 0.1, memory: int = 64 * MiB, gpu: int = 0,
          min_instances: int = 0) -> FunctionSpec:
    return FunctionSpec(name=name, handler="main:handle", tenant=tenant,
                        resources=Resources(cpu=cpu, memory=memory, gpu=gpu),
                        scaling=Scaling(min_instances=min_instances, max_instances=10))


async def _used(r, tenant: str) -> dict[str, int]:
    return await QuotaStore(r).usage(tenant)


@pytest.mark.asyncio
async def test_100_concurrent_deploys_never_exceed_the_functions_quota(aredis, new_aredis):
    r = aredis
    await _tenant(r, "acme", functions=7)
    stores = [Store(new_aredis()) for _ in range(8)]        # calls that really interleave in Redis
    results = await asyncio.gather(*(stores[i % 8].deploy_version(_spec(f"f{i}"), "img:1") for i in range(100)),
                                   return_exceptions=True)
    ok = [i for i, res in enumerate(results) if isinstance(res, tuple)]
    refused = [res for res in results if isinstance(res, QuotaExceeded)]
    assert len(ok) == 7 and len(refused) == 93, results
    assert all((e.resource, e.current, e.limit) == ("functions", 7, 7) for e in refused)
    assert await r.scard(keys.tenant_functions("acme")) == 7
    assert sorted(n.decode() for n in await r.smembers(keys.FUNCTIONS)) == sorted(f"acme.f{i}" for i in ok)
    # a refused deploy leaves nothing behind: no version record, no function, no version number
    refused_names = [f"acme.f{i}" for i in range(100) if i not in ok]
    for name in refused_names:
        assert not await r.exists(keys.function_version(name, 1), keys.function(name), keys.function_seq(name))
    # a redeploy of an existing function is always allowed; a delete frees a place
    assert (await Store(r).deploy_version(_spec(f"f{ok[0]}"), "img:2"))[0] == 2
    with pytest.raises(QuotaExceeded):
        await Store(r).deploy_version(_spec("late"), "img:1")
    assert await Store(r).delete_function(f"acme.f{ok[1]}")
    assert await r.scard(keys.tenant_functions("acme")) == 6
    assert await Store(r).deploy_version(_spec("late"), "img:1") == (1, 1)
    # another tenant's functions do not count against acme's quota
    assert await Store(r).deploy_version(_spec("f1", tenant="other"), "img:1") == (1, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("quota, req, fits", [
    ({"instances": 7}, (100, 64 * MiB, 0), 7),
    ({"cpu": 2.5}, (300, 64 * MiB, 0), 8),                # 8 x 0.3 = 2.4 cores of 2.5
    ({"memory": 1 * GiB}, (100, 100 * MiB, 0), 10),       # 10 x 100 MiB of 1024 MiB
    ({"gpus": 3}, (100, 64 * MiB, 1), 3),
], ids=["instances", "cpu", "memory", "gpus"])
async def test_100_concurrent_reservations_never_exceed_the_quota_and_releases_return_to_zero(
        aredis, new_aredis, quota, req, fits):
    r = aredis
    await _tenant(r, "acme", **quota)
    await add_node(r, "n1", cpu=1_000_000, memory=1000 * GiB)
    cpu, memory, gpus = req
    stores = [Store(new_aredis()) for _ in range(8)]

    async def one(i: int):
        try:
            return await stores[i % 8].reserve("n1", cpu, memory, "acme", gpus)
        except QuotaExceeded as exc:
            return exc
    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert results.count(True) == fits, results
    resource = next(iter(quota))
    refused = [res for res in results if isinstance(res, QuotaExceeded)]
    assert len(refused) == 100 - fits and all(e.resource == resource for e in refused)
    assert refused[0].limit == quota[resource]
    used = await _used(r, "acme")
    assert used["instances"] == fits and used["cpu"] == fits * cpu and used["memory"] == fits * memory
    assert used["gpus"] == fits * gpus
    assert [int(v) for v in await r.hmget(keys.node_alloc("n1"), "cpu", "memory")] == [fits * cpu, fits * memory]

    # all but one reservation become instance records; every release path gives usage back once
    insts = [state.Instance(id=f"i{k}", function="acme.fn", version=1, node="n1", cpu=cpu, memory=memory,
                            gpus=gpus, tenant="acme") for k in range(fits - 1)]
    for inst in insts:
        await r.hset(keys.instance(inst.id), mapping=inst.to_hash())
    store = Store(r)
    await store.unreserve("n1", cpu, memory, "acme", gpus)    # the one no record took over
    await store.reap(insts[0])
    await store.reap(insts[0])                                # a repeat gives nothing back twice
    await asyncio.gather(*(store.reap(i) for i in insts[1:-1]))
    assert [int(v) for v in await r.hmget(keys.node_alloc("n1"), "cpu", "memory")] == [cpu, memory]
    # the last one's node died: its alloc record is dropped whole, its tenant usage still returns
    await kill_node(r, "n1")
    assert await store.forget_node("n1", everything=False)
    await store.reap(insts[-1], release=False)
    await store.reap(insts[-1], release=False)
    used = await _used(r, "acme")
    assert {k: used[k] for k in ("instances", "cpu", "memory", "gpus")} == \
        {"instances": 0, "cpu": 0, "memory": 0, "gpus": 0}
    assert not await r.exists(keys.node_alloc("n1"))


@pytest.mark.asyncio
async def test_a_quota_refusal_reserves_nothing_on_the_node(aredis):
    r = aredis
    await _tenant(r, "acme", instances=1)
    await add_node(r, "n1")
    store = Store(r)
    assert await store.reserve("n1", 100, 64 * MiB, "acme")
    with pytest.raises(QuotaExceeded) as refused:
        await store.reserve("n1", 100, 64 * MiB, "acme")
    assert str(refused.value) == "quota exceeded: tenant acme uses 1 of 1 instances"
    assert [int(v) for v in await r.hmget(keys.node_alloc("n1"), "cpu", "memory")] == [100, 64 * MiB]
    # a node that does not fit reserves nothing for the tenant either
    assert not await store.reserve("n1", 10**9, 64 * MiB, "other")
    assert await r.hgetall(keys.tenant_used("other")) == {}


async def _deploy(r, name: str, tenant: str, **kw) -> None:
    await Store(r).deploy_version(_spec(name, tenant, **kw), f"img/{name}:1")


@pytest.mark.asyncio
async def test_the_scheduler_stops_at_the_instances_quota_and_says_why(aredis):
    r = aredis
    await _tenant(r, "acme", instances=2)
    await add_node(r, "n1")
    await add_node(r, "n2")
    await _deploy(r, "api", "acme", min_instances=4)
    await _deploy(r, "web", "default", min_instances=1)       # another tenant: unaffected
    s, workers = scheduler(r), [FakeWorker(r, "n1"), FakeWorker(r, "n2")]
    for _ in range(4):
        await s._iteration()
        for w in workers:
            await w.step()
    acme = await Store(r).function_instances("acme.api")
    assert len(acme) == 2 and all(i.tenant == "acme" for i in acme)
    assert len(await Store(r).function_instances("web")) == 1
    fields = await Store(r).function_fields("acme.api")
    assert fields["pending_reason"] == "quota exceeded: tenant acme uses 2 of 2 instances"
    assert fields["pending_quota"] == "instances 2 2"
    assert (await Store(r).routing_view("acme.api")).pending_quota == "instances 2 2"
    assert (await _used(r, "acme"))["instances"] == 2
    # the quota is raised: the rest start and the reason goes
    await TenantStore(r).put_tenant(Tenant(id="acme", quotas=Quotas(instances=10)), create=False)
    for _ in range(3):
        await s._iteration()
        for w in workers:
            await w.step()
    assert len(await Store(r).function_instances("acme.api")) == 4
    fields = await Store(r).function_fields("acme.api")
    assert "pending_reason" not in fields and "pending_quota" not in fields
    assert (await _used(r, "acme"))["instances"] == 4


@pytest.mark.asyncio
async def test_min_instances_above_the_instances_quota_is_refused_up_front(aredis):
    r = aredis
    await _tenant(r, "acme", instances=3)
    quotas = QuotaStore(r)
    await quotas.check_min_instances("acme.api", 3)         # at the quota: allowed
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.check_min_instances("acme.api", 4)
    assert refused.value.details() == {"resource": "instances", "current": 0, "limit": 3}
    await quotas.check_min_instances("api", 100)             # the default tenant: no quota

"""Tenant quotas at the gateway, on real Redis: the 403 quota_exceeded bodies, requests per
minute shared by two gateways, concurrent invocations across gateways with leases that lapse
when a gateway dies.  The admin key acts in the default tenant, so its quotas are used here."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from gantry import keys
from gantry.gateway.appkeys import CACHE
from gantry.gateway.errors import ApiError
from gantry.gateway.tenantlimits import TENANT_LIMITS, TenantLimits, rpm_limit
from gantry.store import Store
from gantry.tenants.model import Quotas, Tenant
from gantry.tenants.store import TenantStore

from .support import AUTH, add_instance, gateway, register_function, spec_dict


async def _quotas(r, **quotas) -> None:
    assert await TenantStore(r).put_tenant(Tenant(id="default", quotas=Quotas(**quotas)), create=False)


@pytest.mark.asyncio
async def test_100_concurrent_deploys_through_the_api_never_exceed_the_functions_quota(redis_url, aredis):
    await _quotas(aredis, functions=5)
    async with gateway(redis_url) as client:
        async def deploy(i: int):
            resp = await client.post("/v1/functions", json={"spec": spec_dict(f"fn{i}"), "image": "img:1"},
                                     headers=AUTH)
            return resp.status, await resp.json()
        results = await asyncio.gather(*(deploy(i) for i in range(100)))
    assert sorted(status for status, _ in results) == [201] * 5 + [403] * 95
    refused = [body["error"] for status, body in results if status == 403]
    assert all(e["code"] == "quota_exceeded" and e["resource"] == "functions" and e["current"] == 5
               and e["limit"] == 5 for e in refused), refused[:3]
    assert refused[0]["message"] == "quota exceeded: tenant default uses 5 of 5 functions"
    assert await aredis.scard(keys.tenant_functions("default")) == 5
    assert await aredis.scard(keys.FUNCTIONS) == 5


@pytest.mark.asyncio
async def test_scale_above_the_instances_quota_is_403(redis_url, redis_client, aredis):
    register_function(redis_client, "echo", scaling={"max_instances": 10})
    await _quotas(aredis, instances=3)
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/functions/echo/scale", json={"min_instances": 4}, headers=AUTH)
        assert resp.status == 403
        err = (await resp.json())["error"]
        assert (err["code"], err["resource"], err["current"], err["limit"]) == ("quota_exceeded", "instances", 0, 3)
        resp = await client.post("/v1/functions/echo/scale", json={"min_instances": 3}, headers=AUTH)
        assert resp.status == 200


@pytest.mark.asyncio
async def test_a_request_waiting_for_a_start_its_quota_refuses_gets_403_at_once(redis_url, redis_client, aredis):
    register_function(redis_client, "echo")
    # what the scheduler writes when the tenant's quota refuses the placement
    await Store(aredis).set_pending_reason("echo", "quota exceeded: tenant default uses 2 of 2 instances",
                                           "instances 2 2")
    async with gateway(redis_url, cold_start_timeout=10.0) as client:
        t0 = time.monotonic()
        resp = await client.post("/v1/invoke/echo", json={}, headers=AUTH)
        took = time.monotonic() - t0
        assert resp.status == 403
        err = (await resp.json())["error"]
        assert (err["code"], err["resource"], err["current"], err["limit"]) == ("quota_exceeded", "instances", 2, 2)
        assert err["message"] == "quota exceeded: tenant default uses 2 of 2 instances"
        assert took < 5.0          # not the cold-start timeout
        # the scheduler clears it (the quota was raised): once the hint arrives, requests wait again
        await Store(aredis).set_pending_reason("echo", "", "")
        known = client.app[CACHE].entries["echo"].known
        for _ in range(40):
            if known.pending_quota is None:
                break
            await asyncio.sleep(0.05)
        assert known.pending_quota is None
        with pytest.raises(TimeoutError):       # waiting for an instance, not refused
            async with asyncio.timeout(0.5):
                await client.post("/v1/invoke/echo", json={}, headers=AUTH)


@pytest.mark.asyncio
async def test_rpm_is_shared_by_two_gateways(redis_url, aredis):
    rpm = 600                                  # 10/s; burst 10
    rate, burst = rpm_limit(rpm)
    await _quotas(aredis, rpm=rpm)
    counts = {"admitted": 0, "refused": 0}
    seen_429: list = []
    window = 3.0
    async with gateway(redis_url) as a, gateway(redis_url) as b:
        async def hammer(client, deadline):
            sent = 0
            while time.monotonic() < deadline and sent < 5000:
                sent += 1
                resp = await client.post("/v1/invoke/nothing-here", data=b"", headers=AUTH)
                if resp.status == 429:
                    counts["refused"] += 1
                    if not seen_429:
                        seen_429.append((dict(resp.headers), await resp.json()))
                else:
                    assert resp.status == 404          # admitted: then not found
                    counts["admitted"] += 1
                await resp.release()
                await asyncio.sleep(0.002)
        deadline = time.monotonic() + window
        await asyncio.gather(*(hammer(c, deadline) for c in (a, b) for _ in range(4)))
    # Ideal: rate*W + burst = 40.  Shared bound (2 replicas, sync 0.1 s): + burst + rate*0.3 = 63.
    # Two unshared limits would admit 2 * 40 = 80.
    assert rate * window <= counts["admitted"] <= rate * window + 2 * burst + rate * 0.5, counts
    assert counts["refused"] > 100, counts
    headers, body = seen_429[0]
    assert int(headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "rate_limited" and body["error"]["resource"] == "rpm"
    assert body["error"]["limit"] == rpm


@pytest.mark.asyncio
async def test_concurrency_across_gateways_never_exceeds_the_limit(redis_url, redis_client, aredis, fake_upstream):
    limit = 3
    await _quotas(aredis, concurrency=limit)
    inflight = {"now": 0, "most": 0}

    async def slow(request: web.Request) -> web.Response:
        inflight["now"] += 1
        inflight["most"] = max(inflight["most"], inflight["now"])
        await asyncio.sleep(0.4)
        inflight["now"] -= 1
        return web.json_response({"ok": True})
    upstream = await fake_upstream(slow)
    register_function(redis_client, "slow", scaling={"concurrency": 50})
    add_instance(redis_client, "slow", upstream.port)
    async with gateway(redis_url) as a, gateway(redis_url) as b:
        async def call(client):
            resp = await client.post("/v1/invoke/slow", json={}, headers=AUTH)
            return resp.status, await resp.json()
        results = await asyncio.gather(*(call(c) for c in (a, b) for _ in range(10)))
        statuses = sorted(s for s, _ in results)
        assert statuses == [200] * limit + [403] * (20 - limit), statuses
        assert inflight["most"] == limit
        err = next(body["error"] for s, body in results if s == 403)
        assert (err["code"], err["resource"], err["limit"]) == ("quota_exceeded", "concurrency", limit)
        assert err["current"] == limit
        for _ in range(50):                      # the slots are released once the calls end
            if await aredis.zcard(keys.tenant_inflight("default")) == 0:
                break
            await asyncio.sleep(0.05)
        assert await aredis.zcard(keys.tenant_inflight("default")) == 0
        assert (await a.post("/v1/invoke/slow", json={}, headers=AUTH)).status == 200
        # a tenant without a concurrency quota pays no round trip: nothing is written for it
        assert a.app[TENANT_LIMITS]._concurrency == {"default": limit}


@pytest.mark.asyncio
async def test_a_dead_gateways_slots_lapse_and_a_live_ones_are_renewed(aredis, new_aredis):
    await _quotas(aredis, concurrency=2)
    dead = TenantLimits(new_aredis(), lease=0.6)
    live = TenantLimits(new_aredis(), lease=0.6)
    other = TenantLimits(new_aredis(), lease=0.6)
    for limits in (dead, live, other):
        await limits.refresh()
    now = asyncio.get_running_loop().time()
    assert await dead.admit("default", now) is not None      # held, never released: it "dies"
    release = await live.admit("default", now)
    with pytest.raises(ApiError) as refused:
        await other.admit("default", now)
    assert refused.value.status == 403 and refused.value.details == {
        "resource": "concurrency", "current": 2, "limit": 2}
    # the live gateway renews its lease; the dead one's lapses
    for _ in range(6):
        await asyncio.sleep(0.2)
        await live.renew()
    release_other = await other.admit("default", asyncio.get_running_loop().time())   # the dead slot lapsed
    with pytest.raises(ApiError):                            # the live one's slot still counts
        await other.admit("default", asyncio.get_running_loop().time())
    release()
    release_other()
    await live.close()
    await other.close()
    assert await aredis.zcard(keys.tenant_inflight("default")) == 0


async def test_an_rpm_quota_of_zero_admits_nothing_and_spoils_no_other_tenant(aredis):
    """rpm 0 (a suspended tenant) is refused with 429, and taking it does not stop the
    quotas of the tenants after it from being applied (the limiter takes positive rates only)."""
    limits = TenantLimits(aredis)
    limits.apply({"held": {"rpm": 0}, "zed": {"rpm": 60}})
    with pytest.raises(ApiError) as refused:
        await limits.admit("held", 0.0)
    assert refused.value.status == 429 and "0 requests per minute" in str(refused.value)
    assert await limits.admit("zed", 0.0) is None              # zed's quota was applied: its burst admits
    limits.apply({"held": {"rpm": 120}})                        # lifted: admitted again
    assert await limits.admit("held", 0.0) is None


async def test_a_quota_change_reaches_the_gateway_by_its_announcement(redis_url, aredis):
    """PATCH announces "tenant:ID" on the gateway's one event listener, which reloads the
    quotas at once: an rpm of 0 is enforced well before the 2 s poll would have found it."""
    from gantry.settings import hash_key
    from gantry.tenants.apikeys import ApiKey, new_key
    from gantry.tenants.model import Scope

    tenants = TenantStore(aredis)
    await tenants.put_tenant(Tenant(id="acme"), create=True)
    key_id, key = new_key()
    await tenants.add_key(ApiKey(id=key_id, tenant="acme", scope=Scope.INVOKE, hash=hash_key(key)))
    async with gateway(redis_url) as client:
        await asyncio.sleep(0.3)                       # the listener is subscribed
        headers = {"Authorization": f"Bearer {key}"}
        assert (await client.post("/v1/invoke/nothing", json={}, headers=headers)).status == 404
        resp = await client.patch("/v1/tenants/acme", json={"quotas": {"rpm": 0}}, headers=AUTH)
        assert resp.status == 200
        t0 = time.monotonic()
        while (await client.post("/v1/invoke/nothing", json={}, headers=headers)).status != 429:
            assert time.monotonic() - t0 < 1.0, "the quota change was not announced to the gateway"
            await asyncio.sleep(0.02)

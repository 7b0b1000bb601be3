"""The gateway's small parts on their own: the instance picker, serve()."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gantry.gateway import GatewaySettings, serve
from gantry.gateway.balancer import Balancer

from .support import ADMIN_HASH, AUTH, instance_record

pytestmark = pytest.mark.timeout(30)


def test_balancer_picks_spreads_caps_and_suspends():
    a, b = instance_record("f", 1, inst_id="a"), instance_record("f", 2, inst_id="b")
    lb = Balancer()
    lb.update([a, b], capacity=2)
    first, second = lb.pick(now=0), lb.pick(now=0)
    assert {first.instance.id, second.instance.id} == {"a", "b"}   # idle instances share the load
    third, fourth = lb.pick(now=0), lb.pick(now=0)
    assert third and fourth
    assert lb.pick(now=0) is None                       # 2 x capacity 2: full
    on_a, on_b = ([t for t in (first, second, third, fourth) if t.instance.id == i] for i in "ab")
    lb.release(on_a[0])
    again = lb.pick(now=0)
    assert again.instance.id == "a"
    lb.release(again)
    lb.release(on_b[0])
    excluded = lb.pick(exclude={"a"}, now=0)
    assert excluded.instance.id == "b"
    lb.release(excluded)
    lb.suspend("b", 5, now=0)
    one = lb.pick(now=1)
    assert one.instance.id == "a" and lb.pick(now=1) is None   # b is skipped while suspended ...
    lb.release(one)
    assert lb.pick(now=6).instance.id in ("a", "b")              # ... and back after
    # an instance that left the ready set keeps its count until released, and is not picked
    lb = Balancer()
    lb.update([a, b], capacity=1)
    on_a = lb.pick(exclude={"b"}, now=0)
    assert on_a.instance.id == "a"
    lb.update([b], capacity=1)
    assert lb.inflight == 1 and lb.ready == 1
    on_b = lb.pick(now=0)
    assert on_b.instance.id == "b" and lb.pick(now=0) is None
    lb.release(on_a)
    lb.release(on_b)
    assert lb.inflight == 0 and lb.ready == 1


async def test_serve_runs_until_stopped(redis_url):
    stop = asyncio.Event()
    started: asyncio.Future = asyncio.get_running_loop().create_future()
    settings = GatewaySettings(redis_url=redis_url, port=0, admin_key_hash=ADMIN_HASH)
    task = asyncio.create_task(serve(settings, stop, on_started=started.set_result))
    port = await asyncio.wait_for(started, 10)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with s.get(f"http://127.0.0.1:{port}/v1/functions", headers=AUTH) as resp:
            assert resp.status == 200
    stop.set()
    await asyncio.wait_for(task, 10)


def test_balancer_runs_on_the_hot_path_router_and_survives_churn():
    from gantry.hotpath import _select

    assert "router" in _select.IMPLEMENTATIONS           # the balancer imported the hot-path router
    a, b = instance_record("f", 1, inst_id="a"), instance_record("f", 2, inst_id="b")
    lb = Balancer()
    lb.update([a, b], capacity=1)
    first = lb.pick(now=0)
    lb.update([b], capacity=1)                             # first's instance leaves with a request in flight
    lb.update([a, b], capacity=1)                          # ... and comes back before it finished
    assert lb.inflight == 1 and lb.ready == 2
    again = lb.pick(now=0)
    assert again is not None
    lb.release(first)
    lb.release(again)
    assert lb.inflight == 0
    assert {lb.pick(now=0).instance.id, lb.pick(now=0).instance.id} == {"a", "b"}


def test_a_balancer_ticket_gives_back_exactly_its_own_slot():
    a = instance_record("f", 1, inst_id="a")
    lb = Balancer()
    lb.update([a], capacity=1)
    old = lb.pick(now=0)
    lb.update([], capacity=1)                              # a leaves with a request in flight ...
    lb.update([a], capacity=1)                             # ... and comes back in a fresh slot
    new = lb.pick(now=0)
    assert new.instance.id == "a" and new.slot != old.slot
    lb.release(old)                                        # the old slot drains; the new one stays full
    assert lb.pick(now=0) is None and lb.inflight == 1
    lb.release(old)                                        # a second release changes nothing
    assert lb.inflight == 1
    lb.release(new)
    assert lb.inflight == 0 and lb.pick(now=0).instance.id == "a"


async def test_the_cache_forgets_an_unknown_name_only_when_no_request_holds_it(aredis):
    from gantry.gateway.cache import FunctionCache
    from gantry.store import Store

    cache = FunctionCache(Store(aredis), negative_ttl=0.0)
    try:
        assert await cache.get("ghost") is None                # not deployed: a negative entry
        entry = cache.entries["ghost"]
        assert not entry.known.exists and entry.known.fetched > 0
        entry.load.waiting = 1                                 # a request waits on the name
        await cache.refresh_all()
        assert cache.entries["ghost"] is entry
        entry.load.waiting = 0
        await cache.refresh_all()
        assert "ghost" not in cache.entries
    finally:
        await cache.close()


async def test_invocations_beyond_the_key_rate_get_429_with_retry_after(redis_url):
    from .support import gateway

    async with gateway(redis_url, rate_limit=0.5, rate_burst=2) as client:
        statuses = []
        for _ in range(3):
            resp = await client.post("/v1/invoke/unknown-fn", json={}, headers=AUTH)
            statuses.append(resp.status)
            body = await resp.json()
        assert statuses == [404, 404, 429]            # admission comes before the lookup
        assert body["error"]["code"] == "rate_limited"
        assert resp.headers["Retry-After"] == "2"     # GCRA: one token per 2 s, exactly


def test_admission_sweeps_idle_keys_and_resolves_them_again():
    from gantry.gateway.admission import Admission

    adm = Admission(rate=10, burst=1)
    adm.check("k", now=0.0)
    assert adm.sweep(now=100.0) == 1 and adm._handles == {}
    adm.check("k", now=100.0)                             # a fresh handle, admitted


async def test_a_keys_rate_limit_holds_across_gateway_replicas(redis_url):
    from .support import gateway

    async with gateway(redis_url, rate_limit=0.2, rate_burst=2) as a, \
            gateway(redis_url, rate_limit=0.2, rate_burst=2) as b:
        assert [(await a.post("/v1/invoke/unknown-fn", json={}, headers=AUTH)).status
                for _ in range(2)] == [404, 404]          # replica A spends the key's burst
        await asyncio.sleep(0.6)                          # both replicas sync (every 0.1 s)
        resp = await b.post("/v1/invoke/unknown-fn", json={}, headers=AUTH)
        assert resp.status == 429                         # replica B was charged A's admissions
        assert int(resp.headers["Retry-After"]) >= 1

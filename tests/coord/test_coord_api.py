"""The /v1/coord API through the SDK (AsyncCoord) against a real gateway and Redis: each
primitive's contract, one test each; the load-bearing safety runs are in test_coord_safety."""
from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from gantry.coord import Compacted, CoordError, FenceError, VersionMismatch
from gantry.coord.store import CoordStore
from gantry.gateway.coord_api import COORD_STORE
from gantry.settings import hash_key
from gantry.tenants.apikeys import ApiKey, new_key
from gantry.tenants.model import Scope, Tenant
from gantry.tenants.store import TenantStore

from gateway.support import ADMIN_KEY
from .support import clients, coord_gateway


async def test_namespaces_are_the_callers_tenants(redis_url, aredis):
    """Two tenants never see each other's names; the default tenant's namespace is "admin"."""
    tenants = TenantStore(aredis)
    await tenants.put_tenant(Tenant(id="acme"), create=True)
    key_id, other_key = new_key()
    await tenants.add_key(ApiKey(id=key_id, tenant="acme", scope=Scope.INVOKE, hash=hash_key(other_key)))
    async with coord_gateway(redis_url) as (_, url), clients(url, 1) as (admin,):
        await admin.set_state("shared/name", {"who": "admin"})
        async with clients(url, 1, key=other_key) as (other,):
            assert await other.get_state("shared/name") is None      # not there: acme's namespace is its own
            await other.set_state("shared/name", {"who": "acme"})
            assert await other.get_state("shared/name") == {"who": "acme"}
        assert await admin.get_state("shared/name") == {"who": "admin"}
    # the keys in Redis carry the namespace: "admin" for the default tenant, "t-acme" for acme
    names = [k.decode() for k in await aredis.keys("gantry:coord:*")]
    assert {n.split("{c:")[1].split("}")[0] for n in names} == {"admin", "t-acme"}


async def test_try_lock_is_exclusive_and_fencing_tokens_grow(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 2) as (a, b):
        t0 = time.monotonic()
        la = await a.try_lock("res", ttl=5)
        assert la is not None and la.token >= 1
        assert await b.try_lock("res", ttl=5) is None
        assert time.monotonic() - t0 < 1.0          # try_lock never waits
        assert (await a.lock_holder("res"))[0] == la.holder
        first = la.token
        await la.release()
        lb = await b.try_lock("res", ttl=5)
        assert lb is not None and lb.token > first
        await lb.release()
        assert await a.lock_holder("res") is None


async def test_fenced_writes_refuse_a_lost_lease(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 2) as (a, b):
        lost = []
        la = await a.try_lock("doc", ttl=0.3, on_lost=lost.append)
        assert la is not None
        la._renewer.cancel()                         # a pause longer than the lease
        await a.set_state("doc/body", "v1", fence=la)
        await asyncio.sleep(0.45)
        lb = await b.try_lock("doc", ttl=5)
        assert lb is not None and lb.token > la.token
        with pytest.raises(FenceError) as err:
            await a.set_state("doc/body", "stale", fence=la)
        assert err.value.status == 409 and err.value.code == "fence_stale"
        with pytest.raises(FenceError):
            await a.atomic_increment("doc/n", fence=la)
        await b.set_state("doc/body", "v2", fence=lb)
        assert await a.get_state("doc/body") == "v2"
        # and with nobody holding it any more, the old grant still cannot write
        await lb.release()
        with pytest.raises(FenceError):
            await b.set_state("doc/body", "late", fence=lb)


async def test_renewal_keeps_the_lease_and_reports_its_loss(redis_url, aredis, new_aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 2) as (a, b):
        lost = []
        la = await a.try_lock("job", ttl=0.3, on_lost=lost.append)
        await asyncio.sleep(1.0)                     # three leases long: renewed in the background
        assert la.held and await b.try_lock("job", ttl=1) is None
        await aredis.delete(*[k for k in await aredis.keys("gantry:coord:*:lock:job")])   # the lease is gone
        for _ in range(50):
            if lost:
                break
            await asyncio.sleep(0.02)
        assert lost == [la] and la.lost and not la.held


async def test_waiting_is_fifo_and_bounded(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 4) as cs:
        holder = await cs[0].try_lock("line", ttl=5)
        order = []

        async def wait(i: int) -> None:
            async with cs[i].lock("line", ttl=5, timeout=10):
                order.append(i)
                await asyncio.sleep(0.05)

        tasks = []
        for i in (1, 2, 3):
            tasks.append(asyncio.create_task(wait(i)))
            await asyncio.sleep(0.15)                # arrive in this order
        t0 = time.monotonic()
        await holder.release()
        await asyncio.gather(*tasks)
        assert order == [1, 2, 3]
        assert time.monotonic() - t0 < 1.0           # woken by the release, not by polling leases
        # bounded: a waiter gives up after its timeout and leaves the line
        held = await cs[0].try_lock("line", ttl=5)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with cs[1].lock("line", ttl=5, timeout=0.3):
                pass
        assert 0.25 < time.monotonic() - t0 < 2.0
        await held.release()
        assert await cs[2].try_lock("line", ttl=5) is not None     # nobody stuck ahead


async def test_a_dead_holder_is_replaced_after_its_lease(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 2) as (a, b):
        la = await a.try_lock("crash", ttl=0.4)
        la._renewer.cancel()                         # the holder dies without releasing
        t0 = time.monotonic()
        async with b.lock("crash", ttl=5, timeout=5) as lb:
            waited = time.monotonic() - t0
            assert lb.token > la.token
        assert 0.2 < waited < 1.5


async def test_election(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 2) as (a, b):
        changes_a, changes_b = [], []
        ea = a.election("leader", candidate="node-a", ttl=2, on_change=changes_a.append)
        eb = b.election("leader", candidate="node-b", ttl=2, on_change=changes_b.append)
        assert await ea.campaign(timeout=1) and ea.is_leader
        assert not await eb.campaign(timeout=0.2) and not eb.is_leader
        assert await eb.leader_id() == "node-a"
        _, rev = await a.list_state()
        waiter = asyncio.create_task(eb.campaign(timeout=5))
        await asyncio.sleep(0.1)
        await ea.resign()
        assert await waiter and eb.is_leader and await ea.leader_id() == "node-b"
        assert changes_a == [True, False] and changes_b == [True]
        # others learn of the change by watching "@lock/leader"
        events, _ = await a.changes("@lock/leader", after=rev)
        assert [(e.op, e.value) for e in events] == [("release", "node-a"), ("grant", "node-b")]
        await eb.resign()


async def test_state_cas_increment_delete_and_list(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 1) as (c,):
        rev = await c.set_state("config/a", {"x": 1})
        entry = await c.get_entry("config/a")
        assert entry.value == {"x": 1} and entry.revision == rev
        assert await c.compare_and_swap("config/a", rev, {"x": 2})
        assert not await c.compare_and_swap("config/a", rev, {"x": 3})     # stale version
        with pytest.raises(VersionMismatch):
            await c.set_state("config/a", 0, expect_revision=0)             # must not exist
        assert await c.compare_and_swap("config/new", 0, "created")
        assert [await c.atomic_increment("n") for _ in range(3)] == [1, 2, 3]
        assert await c.atomic_increment("n", -5) == -2
        with pytest.raises(CoordError) as err:
            await c.atomic_increment("config/a")
        assert err.value.code == "not_an_integer"
        items, at = await c.list_state("config/")
        assert [(e.key, e.value) for e in items] == [("config/a", {"x": 2}), ("config/new", "created")]
        assert await c.delete_state("config/a") and not await c.delete_state("config/a")
        assert await c.get_state("config/a", "gone") == "gone"
        events, _ = await c.changes("config/", after=at)
        assert [(e.key, e.op) for e in events] == [("config/a", "del")]


async def test_watch_waits_orders_and_reports_compaction(redis_url, aredis):
    def small_log(app):
        async def shrink(app):
            app[COORD_STORE].log_maxlen = 10
        app.on_startup.append(shrink)

    async with coord_gateway(redis_url, app_hook=small_log) as (_, url), clients(url, 2) as (w, c):
        _, rev = await w.list_state()
        poll = asyncio.create_task(w.changes("config/", after=rev, timeout=5))
        await asyncio.sleep(0.2)
        assert not poll.done()                       # a long poll waits for a change
        await c.set_state("other/x", 1)              # not under the prefix: still waiting
        await c.set_state("config/y", 2)
        events, at = await asyncio.wait_for(poll, 3)
        assert [(e.key, e.value, e.revision) for e in events] == [("config/y", 2, rev + 2)] and at == rev + 2
        t0 = time.monotonic()
        assert await w.changes("config/", after=at, timeout=0.3) == ([], at)
        assert time.monotonic() - t0 >= 0.25
        for i in range(300):                         # past the (shrunk) log
            await c.set_state("config/y", i)
        with pytest.raises(Compacted) as err:
            await w.changes("config/", after=at)
        assert err.value.status == 410 and err.value.code == "revision_compacted"


async def test_queue_priority_visibility_and_dead_letter(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 1) as (c,):
        for v, p in (("low", 0), ("high", 9), ("mid", 5), ("low2", 0)):
            await c.put("jobs", v, priority=p)
        got = [await c.get("jobs", visibility=10) for _ in range(4)]
        assert [i.value for i in got] == ["high", "mid", "low", "low2"]
        for i in got[1:]:
            await c.ack(i)
        # not acked: invisible until the timeout, then delivered again with a new receipt
        assert await c.get("jobs", visibility=10) is None
        await c.put("short", "x")
        first = await c.get("short", visibility=0.3)
        t0 = time.monotonic()
        again = await c.get("short", timeout=3, visibility=0.3)
        assert again.id == first.id and again.delivery == 2 and time.monotonic() - t0 >= 0.2
        assert again.deadline_ms - 300 >= first.deadline_ms       # Redis time: after the deadline
        with pytest.raises(FenceError) as err:
            await c.ack(first)                                      # the old receipt is stale
        assert err.value.code == "receipt_stale"
        await c.nack(again)
        third = await c.get("short", timeout=1, visibility=5, max_deliveries=3)
        assert third.delivery == 3
        await c.nack(third)
        assert await c.get("short", timeout=0.3, max_deliveries=3) is None   # dead-lettered
        dead = await c.get("short.dead")
        assert dead.value == "x"
        await c.ack(dead)
        # a long poll is woken by a put
        waiter = asyncio.create_task(c.get("later", timeout=5))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await c.put("later", {"n": 1})
        assert (await asyncio.wait_for(waiter, 3)).value == {"n": 1} and time.monotonic() - t0 < 0.5


async def test_fenced_ack(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 2) as (a, b):
        await a.put("work", 1)
        la = await a.try_lock("worker", ttl=0.3)
        la._renewer.cancel()
        item = await a.get("work", visibility=30)
        await asyncio.sleep(0.45)
        assert await b.try_lock("worker", ttl=5) is not None
        with pytest.raises(FenceError) as err:
            await a.ack(item, fence=la)
        assert err.value.code == "fence_stale"
        assert await a.queue_depth("work") == (0, 1)


async def test_services_register_expire_and_pick_by_weight(redis_url, aredis):
    async with coord_gateway(redis_url) as (_, url), clients(url, 1) as (c,):
        await c.register_service("db", "a", "10.0.0.1", 5432, metadata={"zone": "x"}, weight=3, ttl=5)
        await c.register_service("db", "b", "10.0.0.2", 5432, weight=1, ttl=5)
        await c.register_service("db", "c", "10.0.0.3", 5432, weight=1, ttl=0.3)
        found = {s.id: s for s in await c.discover("db")}
        assert set(found) == {"a", "b", "c"} and found["a"].metadata == {"zone": "x"}
        await asyncio.sleep(0.45)                   # c missed its heartbeat
        assert not await c.heartbeat("db", "c")
        assert await c.heartbeat("db", "a", ttl=5)
        picks = [(await c.get_healthy_service("db")).id for _ in range(40)]
        assert set(picks) == {"a", "b"} and picks.count("a") == 30 and picks.count("b") == 10
        await c.deregister_service("db", "a")
        await c.deregister_service("db", "b")
        assert await c.get_healthy_service("db") is None


async def test_coordination_tokens(redis_url, redis_client):
    """A function's token is good for /v1/coord only, while its instance runs, in its owner's
    namespace; a forged one counts as a wrong key."""
    from gantry_runtime.coord import coord_token
    from gantry.coord import AsyncCoord
    from gateway.support import add_instance, register_function
    from gantry import keys

    register_function(redis_client, "agent")
    inst = add_instance(redis_client, "agent", 1)
    token = coord_token(inst, "test-instance-key")
    async with coord_gateway(redis_url) as (client, url), clients(url, 1) as (admin,):
        fn = AsyncCoord(url, token)
        try:
            await fn.set_state("from/function", 1)
            assert await admin.get_state("from/function") == 1       # the owner's namespace
            resp = await client.post("/v1/invoke/agent", headers={"Authorization": f"Bearer {token}"}, data=b"{}")
            assert resp.status == 403
            resp = await client.get("/v1/functions", headers={"Authorization": f"Bearer {token}"})
            assert resp.status == 403
            forged = AsyncCoord(url, coord_token(inst, "another-key"))
            with pytest.raises(CoordError) as err:
                await forged.get_state("from/function")
            assert err.value.status == 401
            await forged.close()
            redis_client.hset(keys.instance(inst), "state", "stopped")
            await asyncio.sleep(5.1)                                   # past the verdict cache
            with pytest.raises(CoordError) as err:
                await fn.get_state("from/function")
            assert err.value.status == 401
        finally:
            await fn.close()


async def test_coordination_calls_have_their_own_rate_budget(redis_url, aredis):
    """A low admin-call limit does not refuse /v1/coord/ calls (they are counted against
    GANTRY_COORD_RATE_LIMIT instead), and the coordination limit refuses calls over it with
    a 429 and Retry-After, while the admin budget the admin calls use is untouched by them."""
    async with coord_gateway(redis_url, admin_rate_limit=1, admin_rate_burst=1,
                             coord_rate_limit=1, coord_rate_burst=20) as (client, url), \
            clients(url, 1) as (c,):
        for i in range(20):             # 20 x the admin burst: all answered within the coord burst
            await c.set_state("budget", i)
        with pytest.raises(CoordError) as refused:
            await c.get_state("budget")
        assert refused.value.status == 429 and "coordination rate limit" in str(refused.value)
        # the admin budget was not spent by the coordination calls: one admin call still passes
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        resp = await client.get("/v1/functions", headers=headers)
        assert resp.status == 200, await resp.text()
        resp = await client.get("/v1/functions", headers=headers)
        assert resp.status == 429 and "admin API rate limit" in (await resp.json())["error"]["message"]
        assert resp.headers["Retry-After"]


async def test_sync_locks_share_one_renewal_thread(redis_url, aredis):
    """The synchronous client renews every held lock from one thread of its own (a lock
    cycle starts no thread): a lock outlives its lease while held, many cycles leave one
    renewal thread, a lease taken away is reported through on_lost, a released one is not."""
    import threading

    from gantry import keys
    from gantry.coord import Coord

    async with coord_gateway(redis_url) as (_, url):
        def scenario() -> dict:
            c = Coord(url, ADMIN_KEY, timeout=10)
            lost: list = []
            try:
                kept = c.try_lock("kept", ttl=0.3, on_lost=lost.append)
                for _ in range(50):
                    lk = c.try_lock("cycled", ttl=5)
                    assert lk is not None and lk.release()
                threads = [t for t in threading.enumerate() if t.name == "coord-lock-renewer"]
                time.sleep(1.0)                     # over three leases: only renewals keep it
                holder = c.lock_holder("kept")
                return {"kept": kept, "lost": lost, "threads": len(threads), "holder": holder, "c": c}
            except BaseException:
                c.close()
                raise

        out = await asyncio.to_thread(scenario)
        c, kept = out["c"], out["kept"]
        try:
            assert out["threads"] == 1
            assert out["holder"] == (kept.holder, kept.token) and kept.held and out["lost"] == []
            await aredis.delete(keys.coord_lock("admin", "kept"))       # the lease taken away
            deadline = time.monotonic() + 5
            while not out["lost"] and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert out["lost"] == [kept] and kept.lost and not kept.held
            again = await asyncio.to_thread(c.try_lock, "again", 0.3)
            await asyncio.to_thread(again.release)
            await asyncio.sleep(0.3)
            assert not again.lost                  # a released lock is never reported lost
        finally:
            await asyncio.to_thread(c.close)

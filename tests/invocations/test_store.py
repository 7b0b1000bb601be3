"""The async invocation scripts (gantry.keys, run by InvocationStore) on a real Redis: a claim
fences every later write, a heartbeat keeps work from being reclaimed, an entry is
acknowledged only with its outcome, and retries, cancels, expiry, replays and idempotency
keys do what the API promises."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from gantry import keys
from gantry.invocations.model import State
from gantry.invocations.store import InvocationStore
from gantry.manifest import AsyncPolicy

pytestmark = pytest.mark.redis
POLICY = AsyncPolicy()


async def _queued(store: InvocationStore, fn: str = "f", **kw) -> str:
    inv_id = uuid.uuid4().hex
    sub = await store.submit(inv_id, fn, "default", kw.pop("policy", POLICY), b'{"n": 1}', "application/json", **kw)
    assert sub.outcome == "created" and sub.id == inv_id
    return inv_id


async def _read_one(store: InvocationStore, consumer: str, fn: str = "f", priority: str = "normal"):
    await store.ensure_groups(fn)
    entries = await store.read(fn, priority, consumer, 10)
    assert len(entries) == 1
    return entries[0]


async def test_an_outcome_is_stored_before_its_entry_is_acknowledged_and_only_with_the_current_lease(aredis):
    store = InvocationStore(aredis)
    inv_id = await _queued(store)
    entry = await _read_one(store, "gw-a")
    first = await store.claim(entry, "gw-a", 60)
    assert first.action == "run" and first.attempts == 1
    # another dispatcher takes it over (gw-a stopped beating): same attempt, a newer lease
    await asyncio.sleep(0.06)
    [taken] = await store.reclaim("f", "normal", "gw-b", 0.05, 10)
    assert await store.note(inv_id, first.lease, instance="i-1")      # still current: noted
    second = await store.claim(taken, "gw-b", 60)
    assert second.action == "resume" and second.attempts == 1 and second.lease > first.lease
    assert second.instance == "i-1"                                  # where to ask for the run
    assert not await store.note(inv_id, first.lease, instance="i-2")  # stale now: refused,
    # and so is a stale outcome; the current one settles and acknowledges
    assert not await store.settle(entry, first.lease, State.SUCCEEDED, 60, status=200, result=b"old")
    assert await aredis.xlen(keys.async_stream("f", "normal")) == 1
    assert await store.settle(taken, second.lease, State.SUCCEEDED, 60, status=200, result=b"new",
                              result_type="text/plain")
    inv = await store.get(inv_id)
    assert inv.state is State.SUCCEEDED and inv.result == b"new" and inv.body is None
    assert await aredis.xlen(keys.async_stream("f", "normal")) == 0
    assert (await aredis.xpending(keys.async_stream("f", "normal"), keys.ASYNC_GROUP))["pending"] == 0
    assert 0 < await aredis.ttl(keys.invocation(inv_id)) <= 60


async def test_a_heartbeat_keeps_running_work_from_being_reclaimed(aredis):
    store = InvocationStore(aredis)
    await _queued(store)
    entry = await _read_one(store, "gw-a")
    claim = await store.claim(entry, "gw-a", 60)
    for _ in range(4):                      # 4 x 40 ms, each beat resetting the idle time
        await asyncio.sleep(0.04)
        assert await store.heartbeat("gw-a", [(entry, claim.lease)]) == []
        assert await store.reclaim("f", "normal", "gw-b", 0.1, 10) == []
    await asyncio.sleep(0.12)               # it stops beating: now it is taken over
    assert [e.invocation_id for e in await store.reclaim("f", "normal", "gw-b", 0.1, 10)] == [entry.invocation_id]
    assert await store.heartbeat("gw-a", [(entry, claim.lease)]) == []   # its lease is still current...
    again = await store.claim(entry, "gw-b", 60)
    assert await store.heartbeat("gw-a", [(entry, claim.lease)]) == [entry.invocation_id]   # ...not now
    assert again.lease > claim.lease


async def test_a_restarted_dispatcher_reads_its_own_pending_entries(aredis):
    store = InvocationStore(aredis)
    inv_id = await _queued(store)
    entry = await _read_one(store, "gw-a")
    await store.claim(entry, "gw-a", 60)
    assert await store.read("f", "normal", "gw-a", 10) == []                 # nothing new
    [own] = await store.read("f", "normal", "gw-a", 10, own=True)
    assert own.invocation_id == inv_id and (await store.claim(own, "gw-a", 60)).action == "resume"


async def test_a_retry_leaves_the_stream_and_comes_back_when_due(aredis):
    store = InvocationStore(aredis)
    inv_id = await _queued(store)
    entry = await _read_one(store, "gw-a")
    claim = await store.claim(entry, "gw-a", 60)
    assert await store.retry(entry, claim.lease, 1000.0, status=500, error_code="function_error", error="boom",
                             now=999.0)
    inv = await store.get(inv_id)
    assert inv.state is State.RETRYING and inv.next_at == 1000.0 and inv.error == "boom"
    assert await aredis.xlen(keys.async_stream("f", "normal")) == 0
    assert await store.move_due(now=999.5) == 0
    assert await store.move_due(now=1000.5) == 1
    again = await _read_one(store, "gw-a")
    second = await store.claim(again, "gw-a", 60)
    assert second.action == "run" and second.attempts == 2


async def test_cancel_applies_to_queued_work_only(aredis):
    store = InvocationStore(aredis)
    queued = await _queued(store)
    assert await store.cancel(queued, 60) == "queued"
    entry = await _read_one(store, "gw-a")
    assert (await store.claim(entry, "gw-a", 60)).action == "settled"      # dropped from the line
    assert (await store.get(queued)).state is State.CANCELLED
    assert await aredis.xlen(keys.async_stream("f", "normal")) == 0
    running = await _queued(store)
    await store.claim(await _read_one(store, "gw-a"), "gw-a", 60)
    assert await store.cancel(running, 60) == "running" and (await store.get(running)).state is State.RUNNING
    assert await store.cancel("0" * 32, 60) == ""


async def test_an_invocation_past_its_age_expires_into_the_dead_letters(aredis):
    store = InvocationStore(aredis)
    inv_id = await _queued(store, policy=AsyncPolicy(max_event_age=1.0))
    entry = await _read_one(store, "gw-a")
    assert (await store.claim(entry, "gw-a", 60, now=time.time() + 5)).action == "expired"
    inv = await store.get(inv_id)
    assert inv.state is State.EXPIRED and inv.error_code == "expired"
    assert [i for i, _ in await store.dead_letters()] == [inv_id]
    # a replay starts it over with a new deadline
    assert await store.replay(inv, 60.0) == "expired"
    inv = await store.get(inv_id)
    assert inv.state is State.QUEUED and inv.attempts == 0 and inv.replays == 1
    assert await store.dead_letters() == []
    assert (await store.claim(await _read_one(store, "gw-a"), "gw-a", 60)).action == "run"


async def test_an_idempotency_key_returns_its_invocation_and_refuses_another_body(aredis):
    store = InvocationStore(aredis)
    first = await store.submit("a" * 32, "f", "default", POLICY, b"1", "application/json",
                               idempotency_key="k", idempotency_ttl=60)
    same = await store.submit("b" * 32, "f", "default", POLICY, b"1", "application/json",
                              idempotency_key="k", idempotency_ttl=60)
    other = await store.submit("c" * 32, "f", "default", POLICY, b"2", "application/json",
                               idempotency_key="k", idempotency_ttl=60)
    elsewhere = await store.submit("d" * 32, "g", "default", POLICY, b"2", "application/json",
                                   idempotency_key="k", idempotency_ttl=60)
    assert (first.outcome, same.outcome, other.outcome, elsewhere.outcome) == (
        "created", "existing", "conflict", "created")
    assert same.id == other.id == "a" * 32
    assert await store.get("b" * 32) is None and await aredis.xlen(keys.async_stream("f", "normal")) == 1


async def test_priorities_have_their_own_streams(aredis):
    store = InvocationStore(aredis)
    low = await _queued(store, priority="low")
    high = await _queued(store, priority="high")
    await store.ensure_groups("f")
    assert [e.invocation_id for e in await store.read("f", "high", "gw", 10)] == [high]
    assert [e.invocation_id for e in await store.read("f", "low", "gw", 10)] == [low]
    assert await store.pending("f") == 2

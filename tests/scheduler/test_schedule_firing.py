"""Firing [[schedules]] against the real Redis (gantry.scheduler.ticker): each tick becomes one
async invocation (InvocationStore.submit for real), exactly once across leaders racing over
the same ticks, after a crash between claim and submit, and never from a deposed leader;
missed ticks follow the catch-up policy; a removed schedule stops and is forgotten."""
from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from gantry import keys, state
from gantry.invocations.store import InvocationStore
from gantry.manifest import FunctionSpec, Schedule
from gantry.scheduler.schedules import Record
from gantry.scheduler.schedulestore import ScheduleStore
from gantry.scheduler.ticker import Ticker
from gantry.store import Deposed, Store

from .fakes import scheduler

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0
T0 = 1_800_000_000                  # a whole minute (2027-01-15T08:00:00Z)
EVERY_MINUTE = Schedule(name="tick", cron="* * * * *", payload={"report": "daily", "n": 1}, priority="high")
EVERY_SECOND = Schedule(name="sec", cron="* * * * * *")


async def deploy(r, name: str, schedules: tuple[Schedule, ...], version: int = 1, tenant: str = "default") -> str:
    """A version of function NAME with SCHEDULES, made active, as the admin API writes it."""
    spec = FunctionSpec(name=name, handler="main:handle", schedules=schedules, tenant=tenant)
    q = spec.qualified
    await r.hset(keys.function_version(q, version),
                 mapping={"image": f"img:{version}", "spec": state.pack(spec.to_dict()), "created": str(time.time())})
    await r.hset(keys.function(q), mapping={"name": q, "latest": version, "active": version})
    await r.sadd(keys.FUNCTIONS, q)
    return q


def ticker(r, **kw) -> Ticker:
    return Ticker(r, Store(r), kw.pop("catchup", HOUR), kw.pop("retention", 24 * HOUR), **kw)


async def invocations(r) -> list:
    store = InvocationStore(r)
    found = [await store.get(k.decode()[len(keys.INVOCATION_PREFIX):])
             for k in await r.keys(keys.INVOCATION_PREFIX + "*")]
    return sorted(found, key=lambda inv: inv.idempotency_key)


async def stream_entries(r, function: str, priority: str) -> int:
    return await r.xlen(keys.async_stream(function, priority))


async def record(r, function: str, name: str) -> Record:
    return Record.from_hash(await r.hgetall(keys.schedule(function, name)))


async def test_a_tick_fires_one_async_invocation_with_the_payload(aredis):
    r = aredis
    fn = await deploy(r, "report", (EVERY_MINUTE,), tenant="acme")
    await r.set(keys.LEADER_EPOCH, 1)
    t = ticker(r)
    assert await t.fire([fn], T0 + 30, 1) == 0             # first seen: starts from now
    assert await t.fire([fn], T0 + 59, 1) == 0             # nothing due yet
    assert await t.fire([fn], T0 + 61, 1) == 1
    assert await t.fire([fn], T0 + 62, 1) == 0             # the same tick never again
    [inv] = await invocations(r)
    assert (inv.function, inv.tenant, inv.source, inv.schedule, inv.priority) == (
        "acme.report", "acme", "schedule", "tick", "high")
    assert inv.idempotency_key == f"schedule:tick:{T0 + 60}"
    assert json.loads(inv.body) == {"report": "daily", "n": 1} and inv.content_type == "application/json"
    assert await stream_entries(r, fn, "high") == 1
    rec = await record(r, fn, "tick")
    assert (rec.claimed, rec.fired, rec.invocation, rec.pending, rec.missed, rec.next) == (
        T0 + 60, T0 + 60, inv.id, "", 0, T0 + 120)


async def test_a_schedule_without_payload_sends_an_empty_json_body(aredis):
    r = aredis
    fn = await deploy(r, "bare", (Schedule(name="b", cron="* * * * *"),))
    await r.set(keys.LEADER_EPOCH, 3)
    t = ticker(r)
    await t.fire([fn], T0, 3)
    assert await t.fire([fn], T0 + 60, 3) == 1
    [inv] = await invocations(r)
    assert inv.body == b"" and inv.content_type == "application/json" and inv.priority == "normal"


async def test_missed_ticks_while_down_fire_once_and_are_counted(aredis):
    r = aredis
    fn = await deploy(r, "report", (EVERY_MINUTE,))
    await r.set(keys.LEADER_EPOCH, 1)
    t = ticker(r, catchup=HOUR)
    await t.fire([fn], T0, 1)
    assert await t.fire([fn], T0 + 600 + 40, 1) == 1         # down ten minutes: one catch-up
    [inv] = await invocations(r)
    assert inv.idempotency_key == f"schedule:tick:{T0 + 600}"
    assert (await record(r, fn, "tick")).missed == 9
    strict = ticker(r, catchup=10)                             # down two hours: too old to catch up
    assert await strict.fire([fn], T0 + 600 + 2 * HOUR + 90, 1) == 0
    rec = await record(r, fn, "tick")
    assert rec.missed == 9 + 121 and rec.claimed == T0 + 600 + 2 * HOUR + 60 and rec.fired == T0 + 600
    assert len(await invocations(r)) == 1


async def test_a_deposed_leaders_claim_is_refused(aredis):
    r = aredis
    fn = await deploy(r, "report", (EVERY_MINUTE,))
    await r.set(keys.LEADER_EPOCH, 1)
    old = ticker(r)
    await old.fire([fn], T0, 1)
    await r.incr(keys.LEADER_EPOCH)                            # a standby took over: epoch 2
    with pytest.raises(Deposed):
        await old.fire([fn], T0 + 60, 1)
    assert (await record(r, fn, "tick")).claimed == T0 and await invocations(r) == []
    await r.incr(keys.LEADER_EPOCH)                            # an epoch above the store's is refused too
    with pytest.raises(Deposed):
        await ticker(r).fire([fn], T0 + 60, 4)
    assert await ticker(r).fire([fn], T0 + 60, 3) == 1


class Crash(Exception):
    """A leader stopping between two steps."""


async def test_a_crash_between_claim_and_submit_is_recovered_without_a_duplicate(aredis):
    r = aredis
    fn = await deploy(r, "report", (EVERY_MINUTE,))
    await r.set(keys.LEADER_EPOCH, 1)
    first = ticker(r)
    await first.fire([fn], T0, 1)

    async def crash(*a, **kw):
        raise Crash()
    first.invocations.submit = crash                          # claimed, then gone before submit
    assert await first.fire([fn], T0 + 60, 1) == 0
    rec = await record(r, fn, "tick")
    assert rec.claimed == T0 + 60 and rec.pending and rec.fired is None and await invocations(r) == []
    await r.incr(keys.LEADER_EPOCH)
    assert await ticker(r).fire([fn], T0 + 61, 2) == 1        # the next leader submits it
    [inv] = await invocations(r)
    assert inv.id == rec.pending and inv.idempotency_key == f"schedule:tick:{T0 + 60}"

    second = ticker(r)                                         # submitted, then gone before recording it
    async def crash_after(*a, **kw):
        raise Crash()
    second.schedules.fired = crash_after
    assert await second.fire([fn], T0 + 121, 2) == 0
    pending = (await record(r, fn, "tick")).pending
    assert len(await invocations(r)) == 2
    await r.incr(keys.LEADER_EPOCH)
    assert await ticker(r).fire([fn], T0 + 122, 3) == 1       # submitted again: "existing", no new record
    invs = await invocations(r)
    assert len(invs) == 2 and invs[1].id == pending and await stream_entries(r, fn, "high") == 2
    rec = await record(r, fn, "tick")
    assert (rec.fired, rec.invocation, rec.pending) == (T0 + 120, pending, "")


async def test_leaders_racing_over_the_same_ticks_fire_each_tick_exactly_once(aredis, new_aredis):
    """Two tickers on their own connections pass at the same simulated seconds over a
    per-second cron; each takes the lead (a new epoch) whenever it finds itself deposed, so
    leadership changes constantly, and both crash at random between claim, submit and record."""
    fn = await deploy(aredis, "racy", (EVERY_SECOND,))
    rng = random.Random(12)
    racers = [ticker(new_aredis()) for _ in range(2)]
    epochs = [int(await aredis.incr(keys.LEADER_EPOCH)) for _ in racers]
    crashes, takeovers = [0], [0]

    def flaky(method):
        async def call(*a, **kw):
            if rng.random() < 0.15:
                crashes[0] += 1
                raise Crash()
            result = await method(*a, **kw)
            if rng.random() < 0.15:
                crashes[0] += 1
                raise Crash()
            return result
        return call
    for t in racers:
        t.invocations.submit, t.schedules.fired = flaky(t.invocations.submit), flaky(t.schedules.fired)

    async def one_pass(i: int, now: float) -> None:
        try:
            await racers[i].fire([fn], now, epochs[i])
        except Deposed:
            takeovers[0] += 1
            epochs[i] = int(await racers[i].schedules.redis.incr(keys.LEADER_EPOCH))
    await aredis.set(keys.LEADER_EPOCH, epochs[1])
    await racers[1].fire([fn], T0 + 0.5, epochs[1])           # first seen at T0: ticks from T0+1 on
    for second in range(1, 41):
        await asyncio.gather(*(one_pass(i, T0 + second + 0.5) for i in range(2)))
    calm = ticker(aredis)                                      # then one leader, no crashes, settles it
    epoch = int(await aredis.incr(keys.LEADER_EPOCH))
    await calm.fire([fn], T0 + 40.5, epoch)

    assert crashes[0] >= 10 and takeovers[0] >= 10          # the race really happened
    invs = await invocations(aredis)
    ticks = [int(inv.idempotency_key.rsplit(":", 1)[1]) for inv in invs]
    assert ticks == sorted(set(ticks)) == list(range(T0 + 1, T0 + 41))
    assert await stream_entries(aredis, fn, "normal") == 40
    rec = await record(aredis, fn, "sec")
    assert (rec.claimed, rec.fired, rec.pending, rec.missed) == (T0 + 40, T0 + 40, "", 0)


async def test_a_removed_schedule_or_a_deleted_function_stops_and_is_forgotten(aredis):
    r = aredis
    fn = await deploy(r, "report", (EVERY_MINUTE, Schedule(name="other", cron="0 * * * *")))
    await r.set(keys.LEADER_EPOCH, 1)
    t = ticker(r)
    await t.fire([fn], T0, 1)
    assert await ScheduleStore(r).known() == {(fn, "tick"), (fn, "other")}
    await deploy(r, "report", (Schedule(name="other", cron="0 * * * *"),), version=2)   # "tick" removed
    assert await t.fire([fn], T0 + 120, 1) == 0
    assert await ScheduleStore(r).known() == {(fn, "other")} and not await r.exists(keys.schedule(fn, "tick"))
    await r.srem(keys.FUNCTIONS, fn)                                    # deleted
    assert await t.fire([], T0 + HOUR + 1, 1) == 0
    assert await ScheduleStore(r).known() == set() and await invocations(r) == []


async def test_the_scheduler_leader_fires_ticks_in_its_pass(aredis, new_aredis):
    r = aredis
    fn = await deploy(r, "report", (EVERY_MINUTE,))
    leader, standby = scheduler(r, "s1"), scheduler(new_aredis(), "s2")
    for s in (leader, standby):
        s.ticker.interval = 0                                 # every pass, for the test
    for now in (T0 + 1, T0 + 61, T0 + 62):
        await asyncio.gather(leader._iteration(now=now), standby._iteration(now=now))
    [inv] = await invocations(r)
    assert inv.idempotency_key == f"schedule:tick:{T0 + 60}" and inv.function == fn

"""LeaderLease against the real Redis: one leader at a time, handover with a higher
epoch, and a deposed leader's fenced writes refused in Redis (Store raises Deposed)."""
from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gantry import keys, state
from gantry.coord import LeaderLease
from gantry.store import Deposed, Store

pytestmark = pytest.mark.timeout(20)


async def test_two_holders_never_both_leader(aredis):
    r = aredis
    a, b = LeaderLease(Store(r), "a", 3000), LeaderLease(Store(r), "b", 3000)
    assert await a.acquire_or_renew(time.monotonic()) == 1
    assert await b.acquire_or_renew(time.monotonic()) == 0
    for _ in range(20):
        for lease in (b, a):
            await lease.acquire_or_renew(time.monotonic())
            now = time.monotonic()
            assert not (a.is_leader(now) and b.is_leader(now))
    now = time.monotonic()
    assert a.is_leader(now) and not b.is_leader(now)
    assert a.epoch == 1        # renewals keep the epoch


async def test_concurrent_acquisition_has_one_winner(aredis):
    r = aredis
    leases = [LeaderLease(Store(r), f"h{i}", 3000) for i in range(10)]
    epochs = await asyncio.gather(*(lease.acquire_or_renew(time.monotonic()) for lease in leases))
    assert sorted(epochs) == [0] * 9 + [1]
    assert sum(lease.is_leader(time.monotonic()) for lease in leases) == 1


async def test_expiry_hands_over_with_a_higher_epoch(aredis):
    r = aredis
    a, b = LeaderLease(Store(r), "a", 150), LeaderLease(Store(r), "b", 150)
    first = await a.acquire_or_renew(time.monotonic())
    assert first > 0 and await b.acquire_or_renew(time.monotonic()) == 0
    await asyncio.sleep(0.25)                     # a stops renewing: the lease expires
    assert not a.is_leader(time.monotonic())      # a's own deadline passed first
    second = await b.acquire_or_renew(time.monotonic())
    assert second > first and b.is_leader(time.monotonic())
    assert await a.acquire_or_renew(time.monotonic()) == 0
    assert not a.is_leader(time.monotonic()) and a.epoch == 0


async def test_deadline_is_the_sent_time_of_the_last_confirmed_renewal(aredis):
    r = aredis
    lease = LeaderLease(Store(r), "a", 3000)
    t0 = time.monotonic()
    await lease.acquire_or_renew(t0)
    assert lease.is_leader(t0 + 2.999) and not lease.is_leader(t0 + 3.0)
    assert not lease.renew_due(t0 + 0.9) and lease.renew_due(t0 + 1.0)


async def test_deposed_leaders_commands_are_refused(aredis):
    r = aredis
    a, b = LeaderLease(Store(r), "a", 100), LeaderLease(Store(r), "b", 3000)
    old = await a.acquire_or_renew(time.monotonic())
    await asyncio.sleep(0.15)
    new = await b.acquire_or_renew(time.monotonic())
    assert new > old
    cmds = keys.node_commands("n1")
    store = Store(r)
    inst = state.Instance(id="i1", function="f", version=1, node="n1")
    # a has not yet noticed (it would only by renewing); Redis refuses it anyway
    with pytest.raises(Deposed):
        await store.create_instance(old, inst, state.command("start", "i1", old))
    assert not await r.exists(keys.instance("i1"))
    await store.create_instance(new, inst, state.command("start", "i1", new))
    with pytest.raises(Deposed):
        await store.command_instance(old, inst, state.command("stop", "i1", old), state.DRAINING)
    assert [state.unpack(c)["epoch"] for c in await r.lrange(cmds, 0, -1)] == [new]
    assert (await store.get_instance("i1")).state == state.PENDING


async def test_release_hands_over_at_once(aredis):
    r = aredis
    a, b = LeaderLease(Store(r), "a", 30_000), LeaderLease(Store(r), "b", 30_000)
    first = await a.acquire_or_renew(time.monotonic())
    assert await b.release() is False             # not b's to release
    assert await a.release() is True
    assert not a.is_leader(time.monotonic())
    assert await b.acquire_or_renew(time.monotonic()) == first + 1


class _Broken:
    async def acquire_leader(self, *args):
        raise RedisConnectionError("connection refused")


async def test_a_failed_renewal_keeps_leadership_only_until_the_deadline(aredis):
    r = aredis
    lease = LeaderLease(Store(r), "a", 3000)
    t0 = time.monotonic()
    epoch = await lease.acquire_or_renew(t0)
    lease._store = _Broken()
    assert await lease.acquire_or_renew(t0 + 1.0) == epoch   # unconfirmed: deadline unchanged
    assert lease.is_leader(t0 + 2.9) and not lease.is_leader(t0 + 3.0)
    assert await lease.acquire_or_renew(t0 + 3.1) == 0

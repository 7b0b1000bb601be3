"""Several replicas' limiters sharing one limit through the real Redis, with injected time."""
from __future__ import annotations

from itertools import accumulate

import pytest

from gantry import keys
from gantry.hotpath.shared_limit import SharedLimits

T0 = 1000.0
N, RATE, BURST, PERIOD, DT = 3, 100.0, 20.0, 0.1, 0.005
LAG = 2 * PERIOD  # syncs are driven at exact instants, so no round trip is added


async def simulate(rl, client, traffic, steps=600, local_burst=None):
    """Admissions per step of DT; replica i offers traffic(i, step) requests per step."""
    per_sync = round(PERIOD / DT)

    limiters = [rl.RateLimiter(1, 1) for _ in range(N)]
    shared = [SharedLimits(client, lim, interval=PERIOD) for lim in limiters]
    hs = [s.add("tenant-x", RATE, BURST, local_burst) for s in shared]
    admitted = []
    for k in range(steps):
        now = T0 + k * DT
        if k % per_sync == 0:
            for s in shared:
                await s.sync(now)
        admitted.append(sum(
            lim.allow(h, now) == 0.0
            for i, (lim, h) in enumerate(zip(limiters, hs))
            for _ in range(traffic(i, k))))
    for s in shared:  # report the tail, for the counter check
        await s.sync(T0 + steps * DT)
    return admitted


def worst_excess(admitted, bound):
    """max over windows [a, b] of admissions minus bound(window length)."""
    sums = [0, *accumulate(admitted)]
    return max(sums[b + 1] - sums[a] - bound(b * DT - a * DT)
               for a in range(len(admitted)) for b in range(a, len(admitted)))


async def test_over_admission_stays_within_the_documented_bound(rl, aredis, redis_client):
    admitted = await simulate(rl, aredis, lambda i, k: 2)  # 3 x 400/s offered against 100/s
    # A(W) <= R*W + b + (N - 1) * (b + R*L), with b = BURST
    assert worst_excess(admitted, lambda w: RATE * w + BURST + (N - 1) * (BURST + RATE * LAG)) <= 0
    total_time = len(admitted) * DT
    assert sum(admitted) >= 0.9 * RATE * total_time  # and the limit is not starved
    assert int(redis_client.get(keys.shared_limit("tenant-x"))) == sum(admitted)
    assert redis_client.pttl(keys.shared_limit("tenant-x")) > 0


async def test_local_burst_share_tightens_the_bound(rl, aredis):
    admitted = await simulate(rl, aredis, lambda i, k: 2, local_burst=BURST / N)
    # with b = B/N: A(W) <= R*W + B + (N - 1) * R*L
    assert worst_excess(admitted, lambda w: RATE * w + BURST + (N - 1) * RATE * LAG) <= 0


async def test_one_busy_replica_gets_the_whole_rate(rl, aredis):
    admitted = await simulate(rl, aredis, lambda i, k: 2 if i == 0 else 0)
    total_time = len(admitted) * DT
    assert BURST + RATE * (total_time - DT) - 1 <= sum(admitted) <= BURST + RATE * total_time


async def test_expired_counter_is_not_a_negative_charge(rl, aredis):
    client = aredis
    a, b = rl.RateLimiter(1, 1), rl.RateLimiter(1, 1)
    sa, sb = SharedLimits(client, a), SharedLimits(client, b)
    ha, hb = sa.add("t", 4, 4), sb.add("t", 4, 4)
    await sa.sync(T0)
    await sb.sync(T0)
    assert [a.allow(ha, T0) for _ in range(3)] == [0.0] * 3
    await sa.sync(T0)
    await sb.sync(T0)  # b is charged a's 3: one left
    assert b.allow(hb, T0) == 0.0 and b.allow(hb, T0) == 0.25
    await client.delete(keys.shared_limit("t"))  # expired while idle
    await sa.sync(T0 + 10)
    await sb.sync(T0 + 10)
    assert b.allow(hb, T0 + 10) == 0.0 and b.peek(hb, T0 + 10) == 0.0
    sb.remove("t")
    with pytest.raises(KeyError):
        sb.handle("t")

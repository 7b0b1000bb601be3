"""The GCRA rate limiter, one body per behaviour, run on the C and Python twins."""
from __future__ import annotations

import math
from array import array

import pytest

T0 = 1000.0  # an event loop's clock, well past the waits below (so Retry-After is exact)


def test_burst_then_exact_retry_after(rl):
    lim = rl.RateLimiter(4, 3)  # T = 0.25 s
    h = lim.handle("tenant-a")
    assert [lim.allow(h, T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.allow(h, T0) == 0.25
    assert lim.allow(h, T0 + 0.125) == 0.125
    assert lim.allow(h, T0 + 0.25) == 0.0
    assert lim.allow(h, T0 + 0.25) == 0.25


@pytest.mark.parametrize("rate,burst", [(10, 5), (3, 1), (7.3, 2.5), (1000, 20), (0.1, 1)])
def test_retry_after_is_exact_for_any_rate(rl, rate, burst):
    lim = rl.RateLimiter(rate, burst)
    h = lim.handle("k")
    now = 12345.678
    for _ in range(50):
        wait = lim.allow(h, now)
        if wait:
            assert lim.allow(h, math.nextafter(now + wait, 0.0)) > 0.0  # a hair early: refused
            now = now + wait
            assert lim.allow(h, now) == 0.0  # exactly on time: admitted


def test_sustained_rate_admits_burst_plus_rate_times_time(rl):
    lim = rl.RateLimiter(64, 8)
    h = lim.handle("k")
    admitted = sum(lim.allow(h, T0 + i / 1024) == 0.0 for i in range(10 * 1024 + 1))
    assert admitted == 8 + 64 * 10


def test_keys_are_independent_and_have_own_limits(rl):
    lim = rl.RateLimiter(1, 1)
    a = lim.handle("a")
    b = lim.add_key("b", 2, 4)
    assert lim.handle("a") == a and lim.handle("b") == b and a != b
    assert lim.allow(a, T0) == 0.0 and lim.allow(a, T0) == 1.0
    assert [lim.allow(b, T0) for _ in range(5)] == [0.0] * 4 + [0.5]
    assert lim.limit(b) == (2.0, 4.0)
    lim.set_limit(a, 4, 2)
    assert lim.allow(a, T0 + 1.0) == 0.0 and lim.allow(a, T0 + 1.0) == 0.0
    assert lim.allow(a, T0 + 1.0) == 0.25
    assert len(lim) == 2


def test_invalid_limits_are_refused(rl):
    for rate, burst in [(0, 1), (-1, 1), (float("inf"), 1), (1, 0.5), (1, float("nan"))]:
        with pytest.raises(ValueError):
            rl.RateLimiter(rate, burst)
    lim = rl.RateLimiter(1, 1)
    with pytest.raises(ValueError):
        lim.add_key("x", 1, 0)


def test_peek_does_not_consume(rl):
    lim = rl.RateLimiter(2, 1)
    h = lim.handle("k")
    assert lim.peek(h, T0) == 0.0 and lim.peek(h, T0) == 0.0
    assert lim.allow(h, T0) == 0.0
    assert lim.peek(h, T0) == 0.5 and lim.allow(h, T0) == 0.5


def test_allow_many_matches_allow(rl):
    one, many = rl.RateLimiter(8, 2), rl.RateLimiter(8, 2)
    keys = [f"k{i % 5}" for i in range(40)]
    hs1 = [one.handle(k) for k in keys]
    hs2 = array("q", [many.handle(k) for k in keys])
    out = array("d", [9.0] * 40)
    expected = [one.allow(h, T0) for h in hs1]
    assert many.allow_many(hs2, T0, out) == sum(r == 0.0 for r in expected)
    assert list(out) == expected
    with pytest.raises(ValueError):
        many.allow_many(hs2, T0, array("d", [0.0]))


def test_sweep_frees_refilled_default_keys_and_reuses_slots(rl):
    lim = rl.RateLimiter(1, 2)
    pinned = lim.add_key("tenant", 1, 2)
    hs = [lim.handle(f"ip-{i}") for i in range(1000)]
    for h in hs:
        lim.allow(h, T0)
    lim.allow(pinned, T0)
    assert lim.sweep(T0 + 0.5) == 0  # not yet refilled: nothing lost
    assert lim.sweep(T0 + 1.0) == 1000 and len(lim) == 1
    assert lim.allow(pinned, T0 + 1.0) == 0.0  # pinned keys stay
    with pytest.raises(rl.StaleHandle):
        lim.allow(hs[0], T0 + 1.0)
    with pytest.raises(KeyError):  # StaleHandle is a KeyError
        lim.key_of(hs[0])
    new = [lim.handle(f"other-{i}") for i in range(1000)]
    assert max(h & 0xFFFFFFFF for h in new) <= 1000  # slots reused, no growth
    assert not set(new) & set(hs)  # but never the same handle
    stale = array("q", [hs[1], new[0]])
    out = array("d", [0.0, 0.0])
    assert lim.allow_many(stale, T0 + 2, out) == 1 and list(out) == [-1.0, 0.0]


def test_incremental_sweep_covers_every_slot(rl):
    lim = rl.RateLimiter(1, 1)
    for i in range(100):
        lim.handle(i)
    freed = [lim.sweep(T0, limit=30) for _ in range(4)]
    assert freed == [30, 30, 30, 10] and len(lim) == 0


def test_memory_stays_bounded_under_many_distinct_keys(rl):
    lim = rl.RateLimiter(10, 1)  # a key is idle again 0.1 s after its request
    now = T0
    top = 0
    for i in range(200_000):  # 1,000 new keys per ms of traffic, 200 ms
        now = T0 + i / 1_000_000
        h = lim.handle(i)
        top = max(top, h & 0xFFFFFFFF)
        lim.allow(h, now)
        if i % 10_000 == 0:
            lim.sweep(now)
    assert len(lim) <= 110_000 and top < 111_000  # ~0.1 s of keys, plus one sweep period
    lim.sweep(now + 0.1)
    assert len(lim) == 0
    assert lim.handle("late") & 0xFFFFFFFF <= top


def test_remove_and_stale_handles(rl):
    lim = rl.RateLimiter(1, 1)
    h = lim.handle("a")
    assert lim.key_of(h) == "a"
    assert lim.remove("a") and not lim.remove("a")
    for call in (lambda: lim.allow(h, T0), lambda: lim.peek(h, T0),
                 lambda: lim.charge(h, T0, 1), lambda: lim.set_limit(h, 1, 1)):
        with pytest.raises(rl.StaleHandle):
            call()
    with pytest.raises(rl.StaleHandle):
        lim.allow(12345, T0)
    with pytest.raises(rl.StaleHandle):
        lim.allow(-1, T0)


def test_charge_and_take_admitted(rl):
    lim = rl.RateLimiter(4, 4)
    h = lim.handle("k")
    assert lim.allow(h, T0) == 0.0 and lim.allow(h, T0) == 0.0
    assert lim.take_admitted(h) == 2 and lim.take_admitted(h) == 0
    lim.charge(h, T0, 2)  # two admitted elsewhere: the bucket is empty
    assert lim.allow(h, T0) == 0.25
    assert lim.take_admitted(h) == 0

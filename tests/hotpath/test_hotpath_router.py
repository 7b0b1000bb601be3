"""The weighted, load-aware router, one body per behaviour, run on the C and Python twins."""
from __future__ import annotations

from collections import Counter

import pytest


def picks(router, n):
    return Counter(router.pick() for _ in range(n))


def test_idle_instances_share_by_weight_times_capacity(rt):
    r = rt.Router(seed=1)
    slots = [r.add(f"i{w}", w, 10) for w in (1, 2, 3, 4)]
    got = picks(r, 1000)
    for w, s in zip((1, 2, 3, 4), slots):
        assert abs(got[s] - 100 * w) <= 2
    r2 = rt.Router(seed=1)
    a, b = r2.add("big", 1, 8), r2.add("small", 1, 4)
    got = picks(r2, 1200)
    assert abs(got[a] - 800) <= 2 and abs(got[b] - 400) <= 2


def test_unhealthy_drained_and_removed_are_never_chosen(rt):
    r = rt.Router(seed=2)
    a, b, c, d = (r.add(x, 1, 4) for x in "abcd")
    r.set_healthy(a, False)
    r.set_weight(b, 0)
    r.remove(c)
    assert set(picks(r, 100)) == {d}
    r.set_healthy(a, True)
    assert set(picks(r, 100)) == {a, d}
    assert len(r) == 3


def test_full_instances_are_skipped_and_all_full_says_minus_one(rt):
    r = rt.Router(seed=3)
    a, b = r.add("a", 1, 2), r.add("b", 5, 1)
    chosen = [r.pick_acquire() for _ in range(3)]
    assert sorted(chosen) == [a, a, b]
    assert r.pick() == -1 and r.pick_acquire() == -1
    r.release(a)
    assert r.pick() == a
    assert r.in_flight(a) == 1 and r.in_flight(b) == 1


def test_in_flight_load_steers_traffic_away(rt):
    r = rt.Router(seed=4)
    slow, fast = r.add("slow", 1, 10), r.add("fast", 1, 10)
    for _ in range(8):
        r.acquire(slow)  # 8 requests stuck: 2 free slots against 10
    got = picks(r, 1200)
    assert abs(got[fast] - 1000) <= 2 and abs(got[slow] - 200) <= 2


def test_same_seed_same_picks_and_seeds_stagger(rt):
    def run(seed):
        r = rt.Router(seed)
        for i in range(16):
            r.add(i, 1 + i % 3, 4)
        out = []
        for k in range(200):
            out.append(r.pick_acquire())
            if k % 3 == 0 and out[-1] >= 0:
                r.release(out[-1])
        return out
    assert run(7) == run(7)
    firsts = {tuple(run(seed)[:4]) for seed in range(8)}
    assert len(firsts) > 1


def test_slot_lives_until_removed_and_drained(rt):
    r = rt.Router(seed=5)
    a = r.add("a", 1, 4)
    r.acquire(a)
    r.remove(a)
    assert r.instance(a) == "a"  # still draining
    assert r.pick() == -1
    b = r.add("b", 1, 4)
    assert b != a  # not reused while a request is in flight
    r.release(a)
    with pytest.raises(KeyError):
        r.instance(a)
    with pytest.raises(KeyError):
        r.release(a)
    assert r.add("c", 1, 4) == a  # now reused
    with pytest.raises(ValueError):
        r.release(b)  # nothing in flight
    with pytest.raises(KeyError):
        r.acquire(99)
    with pytest.raises(KeyError):
        r.remove(-1)


def test_weight_and_capacity_change_without_rebuild(rt):
    r = rt.Router(seed=6)
    a, b = r.add("a", 1, 1), r.add("b", 1, 1)
    r.set_weight(a, 3)
    r.set_capacity(a, 3)
    got = picks(r, 1000)
    assert abs(got[a] - 900) <= 2
    with pytest.raises(ValueError):
        r.set_weight(a, -1)
    with pytest.raises(ValueError):
        r.set_capacity(a, 0)
    with pytest.raises(ValueError):
        r.add("x", 1 << 21, 1)


def test_empty_router_picks_nothing(rt):
    r = rt.Router()
    assert r.pick() == -1 and r.pick_acquire() == -1 and len(r) == 0


def test_a_picked_slot_is_a_ticket_that_outlives_removal(rt):
    r = rt.Router(seed=7)
    old = r.add("a", 1, 2)
    assert r.pick_acquire() == old and r.pick_acquire() == old
    r.remove(old)
    new = r.add("a", 1, 2)              # the same instance back, in a fresh slot
    assert new != old and r.pick_acquire() == new
    r.release(old)
    assert r.instance(old) == "a" and r.in_flight(old) == 1   # one ticket still out on it
    assert r.add("b", 1, 1) not in (old, new)
    r.release(old)
    with pytest.raises(KeyError):
        r.in_flight(old)
    assert r.in_flight(new) == 1

"""The scaling policy's pure decision (gantry.scheduler.autoscale.decide): target
utilization, cooldowns, the warm floor and the reason of each decision."""
from __future__ import annotations

import pytest

from gantry.scheduler.autoscale import Memory, Policy, WantWindow, compute_want, decide, needed_for


def policy(**kw) -> Policy:
    base = dict(minimum=0, maximum=10, concurrency=4)
    return Policy(**{**base, **kw})


@pytest.mark.parametrize("demand, concurrency, utilization, needed", [
    (0, 4, 1.0, 0), (1, 4, 1.0, 1), (4, 4, 1.0, 1), (5, 4, 1.0, 2),
    (10, 4, 0.8, 4),            # 10 / 3.2 = 3.125
    (4, 2, 0.5, 4),             # each instance runs one request
    (3, 10, 0.3, 1),            # 3 / 3.0000000000000004: not 2 through a rounding hair
    (1, 100, 0.01, 1),
])
def test_desired_instances_is_demand_over_concurrency_times_target(demand, concurrency, utilization, needed):
    assert needed_for(demand, concurrency, utilization) == needed


def test_utilization_one_is_todays_want():
    for demand in range(0, 50):
        assert compute_want(demand, 4, 1, 8, 1.0) == max(1, min(8, -(-demand // 4)))


def test_scale_up_with_its_reason():
    d = decide(Memory(1), demand=10, window=4, policy=policy(utilization=0.8), now=100.0)
    assert (d.target, d.changed, d.held) == (4, True, "")
    assert d.reason == "scale up 1->4: 10 in flight / (4 x 0.8)"
    assert d.memory == Memory(4, up_at=100.0, changed_at=100.0)


def test_no_scale_up_within_scale_up_cooldown_of_the_last_scale_up():
    p = policy(up_cooldown=30.0)
    last = Memory(2, up_at=100.0, changed_at=100.0)
    d = decide(last, demand=20, window=5, policy=p, now=112.0)
    assert (d.target, d.changed, d.held, d.wanted) == (2, False, "scale_up_cooldown", 5)
    assert d.reason == "held by scale_up_cooldown (18s left): want 5, 20 in flight / (4 x 1)"
    assert d.memory == last
    later = decide(last, demand=20, window=5, policy=p, now=130.0)
    assert (later.target, later.changed) == (5, True)
    assert later.memory == Memory(5, up_at=130.0, changed_at=130.0)


def test_scale_up_cooldown_counts_from_the_last_scale_up_not_a_scale_down():
    p = policy(up_cooldown=30.0)
    d = decide(Memory(1, up_at=10.0, changed_at=95.0), demand=8, window=2, policy=p, now=100.0)
    assert (d.target, d.changed) == (2, True)


def test_no_scale_down_within_scale_down_cooldown_of_the_last_change():
    p = policy(down_cooldown=60.0)
    for last in (Memory(4, up_at=100.0, changed_at=100.0), Memory(4, up_at=0.0, changed_at=100.0)):
        d = decide(last, demand=0, window=1, policy=p, now=148.0)
        assert (d.target, d.changed, d.held) == (4, False, "scale_down_cooldown")
        assert d.reason == "held by scale_down_cooldown (12s left): want 1, the highest want of the last 60s (0 in flight / (4 x 1) now)"
        done = decide(last, demand=0, window=1, policy=p, now=160.0)
        assert (done.target, done.changed) == (1, True)
        assert done.reason.startswith("scale down 4->1: ")
        assert done.memory == Memory(1, up_at=last.up_at, changed_at=160.0)


def test_no_cooldowns_follow_the_window_both_ways():
    p = policy()
    assert decide(Memory(3, 99.0, 99.0), demand=0, window=0, policy=p, now=100.0).target == 0
    assert decide(Memory(0, 99.0, 99.0), demand=9, window=3, policy=p, now=100.0).target == 3


def test_nothing_to_do_has_no_reason():
    d = decide(Memory(2, 1.0, 1.0), demand=8, window=2, policy=policy(), now=100.0)
    assert (d.target, d.changed, d.reason, d.held) == (2, False, "", "")


def test_warm_floor_holds_n_and_is_the_reason():
    p = policy(warm=3)
    assert p.want(0) == 3
    d = decide(Memory(0), demand=0, window=p.want(0), policy=p, now=100.0)
    assert (d.target, d.reason) == (3, "scale up 0->3: warm 3")
    assert policy(warm=30, maximum=5).floor == 5        # never above max_instances


def test_bounds_are_never_held_by_a_cooldown():
    # min_instances raised inside scale_up_cooldown: the floor still applies
    p = policy(minimum=3, up_cooldown=600.0)
    d = decide(Memory(1, up_at=99.0, changed_at=99.0), demand=0, window=3, policy=p, now=100.0)
    assert (d.target, d.changed) == (3, True)
    assert d.reason == "scale up 1->3: min_instances 3"
    # max_instances lowered inside scale_down_cooldown: the target comes down to it
    p = policy(maximum=2, down_cooldown=600.0)
    d = decide(Memory(6, up_at=99.0, changed_at=99.0), demand=40, window=2, policy=p, now=100.0)
    assert (d.target, d.changed) == (2, True)
    assert d.reason == "scale down 6->2: 40 in flight / (4 x 1) = 10, capped at max_instances 2"


def test_window_holds_a_scale_down_for_idle_timeout_then_decide_follows():
    p, w = policy(idle_timeout=60.0), WantWindow()
    memory = Memory(0)
    for now, demand in ((0.0, 12), (30.0, 0), (59.0, 0), (61.0, 0)):
        d = decide(memory, demand, w.observe(now, p.want(demand), p.idle_timeout), p, now)
        memory = d.memory
    assert memory.target == 0 and d.reason.startswith("scale down 3->0: 0 in flight")

"""The pure parts: demand, want, the idle window, the rollout/scale plan."""
from __future__ import annotations

import random

import msgpack

from gantry import state
from gantry.scheduler.autoscale import WantWindow, compute_want, demand_from_reports, window_max
from gantry.scheduler.reconcile import crash_backoff, plan
from gantry.state import Instance


def test_want_is_ceil_of_demand_over_concurrency_clamped():
    assert compute_want(0, 4, 0, 10) == 0
    assert compute_want(1, 4, 0, 10) == 1
    assert compute_want(9, 4, 0, 10) == 3
    assert compute_want(0, 4, 2, 10) == 2
    assert compute_want(1000, 4, 0, 10) == 10


def test_demand_counts_only_fresh_reports():
    now = 1000.0
    reports = {b"gw1": msgpack.packb([2, 3, now, now - 1]),
               b"gw2": msgpack.packb([1, 1, now, now - 4.9]),
               b"gw3": msgpack.packb([50, 50, now, now - 6]),     # stale
               b"gw4": b"\xc1garbage"}
    assert demand_from_reports(reports, now, 5.0) == 7


def test_window_is_the_max_want_over_the_idle_timeout():
    w = WantWindow()
    assert w.observe(0.0, 3, 10) == 3
    assert w.observe(5.0, 0, 10) == 3
    assert w.observe(10.0, 1, 10) == 3
    assert w.observe(10.5, 0, 10) == 1
    assert w.observe(21.0, 0, 10) == 0


def test_window_matches_its_definition_on_random_sequences():
    rng = random.Random(7)
    for _ in range(50):
        w, samples, t = WantWindow(), [], 0.0
        for _ in range(200):
            t += rng.choice([0.1, 0.25, 1.0, 3.0])
            want = rng.randint(0, 6)
            samples.append((t, want))
            assert w.observe(t, want, 5.0) == window_max(samples, t, 5.0)
        assert len(w) <= 7


def _inst(i: int, version: int, st: str = state.READY) -> Instance:
    return Instance(id=f"i{i}", function="f", version=version, node="n1", state=st, created=float(i))


def test_plan_scales_up_and_down_with_the_target():
    p = plan(1, 1, 3, 9, 10, [_inst(1, 1)])
    assert p.start == {1: 2} and not p.drain and not p.promote
    insts = [_inst(1, 1), _inst(2, 1, state.PENDING), _inst(3, 1), _inst(4, 1, state.UNHEALTHY)]
    p = plan(1, 1, 2, 0, 10, insts)
    assert {i.id for i in p.drain} == {"i4", "i2"} and not p.start     # unhealthy, pending first
    # draining/stopped ones do not count
    p = plan(1, 1, 1, 0, 10, [_inst(1, 1, state.DRAINING)])
    assert p.start == {1: 1}


def test_plan_rollout_starts_the_new_version_then_promotes_when_ready():
    old = [_inst(1, 1), _inst(2, 1)]
    p = plan(1, 2, 1, 0, 10, old)
    assert p.start == {2: 2} and not p.promote and not p.drain
    p = plan(1, 2, 1, 0, 10, old + [_inst(3, 2), _inst(4, 2, state.STARTING)])
    assert not p.start and not p.promote and not p.drain
    p = plan(1, 2, 1, 0, 10, old + [_inst(3, 2), _inst(4, 2)])
    assert p.promote and {i.id for i in p.drain} == {"i1", "i2"}


def test_plan_rollout_with_nothing_live_promotes_at_once():
    p = plan(1, 2, 0, 0, 10, [_inst(1, 1, state.STOPPED)])
    assert p.promote and not p.start
    p = plan(1, 2, 1, 1, 10, [])
    assert p.promote and p.start == {2: 1}


def test_plan_rollout_drains_superseded_versions_and_respects_max():
    insts = [_inst(1, 1), _inst(2, 1), _inst(3, 1), _inst(5, 2)]
    p = plan(1, 3, 0, 0, 2, insts)
    assert p.start == {3: 2} and [i.id for i in p.drain] == ["i5"]


def test_crash_backoff_grows_and_caps():
    assert [crash_backoff(n) for n in (1, 2, 3, 4)] == [0.0, 1.0, 2.0, 4.0]
    assert crash_backoff(50) == 30.0

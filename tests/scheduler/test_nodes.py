"""NodeWatch, the pure liveness decision: live, suspect for dead_after, dead, forgotten."""
from __future__ import annotations

from gantry.scheduler.nodes import NodeWatch


def test_a_missed_heartbeat_is_suspect_then_dead_then_forgotten():
    w = NodeWatch(dead_after=60.0, grace=30.0)
    assert w.observe(["a", "b"], {"a", "b"}, 0.0).suspect == set()
    c = w.observe(["a", "b"], {"a"}, 1.0)
    assert (c.suspect, c.newly_suspect, c.newly_dead) == ({"b"}, ["b"], [])
    c = w.observe(["a", "b"], {"a"}, 60.9)
    assert (c.suspect, c.newly_suspect, c.newly_dead) == ({"b"}, [], [])
    c = w.observe(["a", "b"], {"a"}, 61.0)
    assert (c.suspect, c.newly_dead, c.forget) == (set(), ["b"], [])
    assert w.observe(["a", "b"], {"a"}, 80.0).newly_dead == []          # dead once
    assert w.observe(["a", "b"], {"a"}, 91.0).forget == ["b"]


def test_a_heartbeat_back_resets_the_clock():
    w = NodeWatch(dead_after=10.0, grace=5.0)
    w.observe(["a"], set(), 0.0)
    w.observe(["a"], {"a"}, 9.0)                                         # back before dead_after
    c = w.observe(["a"], set(), 12.0)
    assert (c.suspect, c.newly_suspect, c.newly_dead) == ({"a"}, ["a"], [])
    c = w.observe(["a"], set(), 22.0)
    assert c.newly_dead == ["a"]
    w.observe(["a"], {"a"}, 23.0)                                        # a dead node that came back is live
    assert w.observe(["a"], set(), 24.0).newly_suspect == ["a"]


def test_forgotten_and_unknown_nodes_leave_no_memory():
    w = NodeWatch(dead_after=1.0, grace=1.0)
    w.observe(["a"], set(), 0.0)
    w.observe(["a"], set(), 1.0)
    assert w.observe(["a"], set(), 2.0).forget == ["a"]
    w.forgotten("a")
    assert w.observe([], set(), 3.0).suspect == set()
    assert w.observe(["a"], set(), 4.0).newly_suspect == ["a"]          # registered again: a new clock

"""Random operation sequences must give the same answers from the C and Python twins."""
from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gantry.hotpath._select import twins

SETTINGS = settings(max_examples=200, deadline=None)


def twin(name: str, impl: str):
    found = twins(name)
    if impl not in found:  # a failure, never a skip
        pytest.fail(f"gantry.hotpath._{name}_c is not built")
    return found[impl]


def run(obj, ops, apply):
    """Apply each op, recording its result or the name of the exception it raised."""
    out = []
    for op in ops:
        try:
            out.append(apply(obj, op))
        except Exception as exc:  # noqa: BLE001 - the type is part of the behaviour
            out.append(type(exc).__name__)
    return out


# -- rate limiter -----------------------------------------------------------------------------
KEYS = st.sampled_from(["a", "b", "c", "d", 1, 2])
RATES = st.sampled_from([0.5, 1, 3, 4, 10, 7.3, 1000])
BURSTS = st.sampled_from([1, 1.5, 2, 5, 0.5])
rl_op = st.one_of(
    st.tuples(st.just("tick"), st.floats(0, 2, allow_nan=False)),
    st.tuples(st.just("allow"), KEYS),
    st.tuples(st.just("peek"), KEYS),
    st.tuples(st.just("add"), KEYS, RATES, BURSTS),
    st.tuples(st.just("many"), st.lists(KEYS, max_size=6)),
    st.tuples(st.just("sweep"), st.integers(0, 4)),
    st.tuples(st.just("remove"), KEYS),
    st.tuples(st.just("charge"), KEYS, st.integers(0, 5)),
    st.tuples(st.just("taken"), KEYS),
    st.tuples(st.just("stale"), st.integers(0, 3)),
)


class _RL:
    def __init__(self, mod):
        self.lim = mod.RateLimiter(2, 3)
        self.now = 1000.0
        self.handles = {}  # key -> last handle seen (may go stale on purpose)

    def h(self, key):
        self.handles[key] = self.lim.handle(key)
        return self.handles[key]


def _rl_apply(s, op):
    kind, *a = op
    lim = s.lim
    if kind == "tick":
        s.now += a[0]
        return s.now
    if kind == "allow":
        return lim.allow(s.h(a[0]), s.now)
    if kind == "peek":
        return lim.peek(s.h(a[0]), s.now)
    if kind == "add":
        s.handles[a[0]] = lim.add_key(*a)
        return s.handles[a[0]]
    if kind == "many":
        hs = array("q", [s.h(k) for k in a[0]])
        out = array("d", [0.0] * len(hs))
        return lim.allow_many(hs, s.now, out), list(out)
    if kind == "sweep":
        return lim.sweep(s.now, a[0]), len(lim)
    if kind == "remove":
        return lim.remove(a[0])
    if kind == "charge":
        return lim.charge(s.h(a[0]), s.now, a[1])
    if kind == "taken":
        return lim.take_admitted(s.h(a[0]))
    if kind == "stale":  # an old handle, possibly swept or removed meanwhile
        old = sorted(s.handles.items(), key=repr)
        if not old:
            return None
        return lim.allow(old[a[0] % len(old)][1], s.now)
    raise AssertionError(kind)


@SETTINGS
@given(st.lists(rl_op, max_size=60))
def test_ratelimit_twins_agree(ops):
    c, py = (run(_RL(twin("ratelimit", impl)), ops, _rl_apply) for impl in ("c", "py"))
    assert c == py


# -- router -----------------------------------------------------------------------------------
SLOTS = st.integers(-1, 5)
rt_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 9), st.integers(0, 5), st.integers(1, 5)),
    st.tuples(st.just("add"), st.integers(0, 9), st.integers(0, 5), st.integers(1, 5)),
    st.tuples(st.just("pick")),
    st.tuples(st.just("pick_acquire")),
    st.tuples(st.just("acquire"), SLOTS),
    st.tuples(st.just("release"), SLOTS),
    st.tuples(st.just("remove"), SLOTS),
    st.tuples(st.just("weight"), SLOTS, st.integers(-1, 6)),
    st.tuples(st.just("capacity"), SLOTS, st.integers(0, 6)),
    st.tuples(st.just("healthy"), SLOTS, st.booleans()),
    st.tuples(st.just("inflight"), SLOTS),
)


def _rt_apply(r, op):
    kind, *a = op
    if kind == "add":
        return r.add(f"i{a[0]}", a[1], a[2])
    if kind == "pick":
        return r.pick(), len(r)
    if kind == "pick_acquire":
        return r.pick_acquire()
    if kind == "weight":
        return r.set_weight(a[0], a[1])
    if kind == "capacity":
        return r.set_capacity(a[0], a[1])
    if kind == "healthy":
        return r.set_healthy(a[0], a[1])
    if kind == "inflight":
        return r.in_flight(a[0]), r.instance(a[0])
    return getattr(r, kind)(a[0])


@SETTINGS
@given(st.integers(0, 2**64 - 1), st.lists(rt_op, max_size=80))
def test_router_twins_agree(seed, ops):
    c, py = (run(twin("router", impl).Router(seed), ops, _rt_apply) for impl in ("c", "py"))
    assert c == py


# The gateway's balancer treats the slot from pick_acquire as a ticket that release(slot) takes
# back exactly: tickets on a removed slot stay good, and no slot is reused while any is out.
ticket_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 3)),
    st.tuples(st.just("take")),
    st.tuples(st.just("give"), st.integers(0, 20)),
    st.tuples(st.just("remove"), st.integers(0, 3)),
    st.tuples(st.just("healthy"), st.integers(0, 3), st.booleans()),
)


class _Tickets:
    def __init__(self, mod, seed):
        self.r = mod.Router(seed)
        self.live = {}     # instance id -> its live slot
        self.out = []      # (slot, instance id) per ticket not yet given back

    def check(self):
        for slot in {s for s, _ in self.out}:
            held = [i for s, i in self.out if s == slot]
            assert self.r.in_flight(slot) == len(held) and {self.r.instance(slot)} == set(held)


def _ticket_apply(t, op):
    kind, *a = op
    r = t.r
    name = f"i{a[0]}" if kind in ("add", "remove", "healthy") else None
    if kind == "add":
        if name in t.live:
            return None
        slot = r.add(name, a[1], a[2])
        assert slot not in {s for s, _ in t.out}, "a slot was reused while tickets were out"
        t.live[name] = slot
    elif kind == "take":
        slot = r.pick_acquire()
        if slot >= 0:
            t.out.append((slot, r.instance(slot)))
    elif kind == "give":
        if not t.out:
            return None
        slot, _ = t.out.pop(a[0] % len(t.out))
        r.release(slot)
    elif kind == "remove":
        if name not in t.live:
            return None
        r.remove(slot := t.live.pop(name))
    else:
        if name not in t.live:
            return None
        r.set_healthy(slot := t.live[name], a[1])
    t.check()
    return slot, len(r)


@SETTINGS
@given(st.integers(0, 2**64 - 1), st.lists(ticket_op, max_size=80))
def test_router_slots_are_tickets_and_twins_agree(seed, ops):
    results = {}
    for impl in ("c", "py"):
        t = _Tickets(twin("router", impl), seed)
        results[impl] = [_ticket_apply(t, op) for op in ops]
        draining = {s for s, _ in t.out} - set(t.live.values())
        for slot, _ in t.out:         # giving every ticket back frees every removed slot
            t.r.release(slot)
        assert all(t.r.in_flight(s) == 0 for s in t.live.values())
        for slot in draining:
            with pytest.raises(KeyError):
                t.r.instance(slot)
    assert results["c"] == results["py"]


# -- placement --------------------------------------------------------------------------------
NODES = st.sampled_from([f"node-{i}" for i in range(8)] + ["é-node", ""])
PKEYS = st.one_of(st.text(max_size=12), st.binary(max_size=12))
pl_op = st.one_of(
    st.tuples(st.just("add"), NODES),
    st.tuples(st.just("remove"), NODES),
    st.tuples(st.just("lookup"), PKEYS),
    st.tuples(st.just("rank"), PKEYS, st.integers(-1, 10)),
    st.tuples(st.just("assign"), PKEYS),
    st.tuples(st.just("release"), PKEYS),
    st.tuples(st.just("loads")),
)


def _pl_apply(p, op):
    kind, *a = op
    if kind == "add":
        return p.add_node(a[0])
    if kind == "remove":
        return sorted(p.remove_node(a[0]), key=repr)
    if kind == "lookup":
        return p.lookup(a[0])
    if kind == "rank":
        return p.rank(a[0], a[1])
    if kind == "assign":
        return p.assign(a[0])
    if kind == "release":
        return p.release(a[0])
    return p.loads(), p.nodes(), len(p)


@SETTINGS
@given(st.sampled_from([0.0, 0.1, 0.25, 1.0]), st.integers(1, 40), st.lists(pl_op, max_size=40))
def test_placement_twins_agree(eps, vnodes, ops):
    c, py = (run(twin("placement", impl).Placement(eps, vnodes), ops, _pl_apply)
             for impl in ("c", "py"))
    assert c == py


@SETTINGS
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_hash64_twins_agree(data):
    assert twin("placement", "c").hash64(data) == twin("placement", "py").hash64(data)

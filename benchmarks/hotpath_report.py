"""Hot-path figures, side by side in one run: C, the Python twin, and what users would pick.

Every figure is nanoseconds per operation through a Python call: a Python ``for`` loop makes
``n`` calls (the same ``n`` for every contender of a component) and the time is divided by ``n`` (so the loop's own ~10-15 ns per iteration is
included; ``loop_ns`` reports it).  Each figure is the median of ``repeats`` runs.
``run(quick)`` returns a dict; ``python benchmarks/hotpath_report.py [--quick]`` prints it.
"""
from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from array import array

from gantry.hotpath._select import twins

NOW = 1000.0


def _median_ns(fn, ops: int, repeats: int) -> float:
    """Median ns per op of fn(), which performs ``ops`` operations."""
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t) / ops)
    return statistics.median(times)


# -- rate limiter -------------------------------------------------------------------------------
def ratelimit_cases(n_keys: int = 1000, passes: int = 20):
    """name -> (callable doing n_keys * passes decisions, ops)."""
    cases = {}
    keys = [f"tenant-{i}" for i in range(n_keys)]
    for impl, mod in twins("ratelimit").items():
        lim = mod.RateLimiter(1e9, 1e9)  # admits everything: measures the decision itself
        hs = [lim.handle(k) for k in keys]

        def go(allow=lim.allow, hs=hs):
            for p in range(passes):
                now = NOW + p
                for h in hs:
                    allow(h, now)
        cases[impl] = (go, n_keys * passes)
        if impl == "c":
            harr = array("q", hs)
            out = array("d", bytes(8 * n_keys))

            def batch(many=lim.allow_many, harr=harr, out=out):
                for p in range(passes):
                    many(harr, NOW + p, out)
            cases["c_batch"] = (batch, n_keys * passes)
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    limiter = FixedWindowRateLimiter(MemoryStorage())
    item = parse("1000000000/second")

    def lim_go(hit=limiter.hit, item=item, keys=keys):
        for _ in range(passes):
            for k in keys:
                hit(item, k)
    cases["limits"] = (lim_go, n_keys * passes)
    return cases


# -- router ---------------------------------------------------------------------------------------
def router_cases(n_inst: int = 16, n: int = 20000):
    cases = {}
    weights = [1 + (i % 4) for i in range(n_inst)]
    for impl, mod in twins("router").items():
        r = mod.Router(seed=1)
        for i, w in enumerate(weights):
            r.add(f"inst-{i}", w, 1 << 20)

        def go(pick=r.pick, n=n):
            for _ in range(n):
                pick()
        cases[impl] = (go, n)

        def go_pair(pa=r.pick_acquire, rel=r.release, n=n):
            for _ in range(n):
                rel(pa())
        cases[impl + "_acquire_release"] = (go_pair, n)
    population = list(range(n_inst))
    rng = random.Random(1)

    def choices(ch=rng.choices, pop=population, w=weights, n=n):
        for _ in range(n):
            ch(pop, w)
    cases["random.choices"] = (choices, n)
    return cases


# -- placement ------------------------------------------------------------------------------------
def placement_cases(n_nodes: int = 100, n_keys: int = 1000, passes: int = 20):
    cases = {}
    nodes = [f"node-{i}" for i in range(n_nodes)]
    keys = [f"tenant-{i}/fn-{i % 7}" for i in range(n_keys)]
    for impl, mod in twins("placement").items():
        p = mod.Placement(eps=0.25)
        for node in nodes:
            p.add_node(node)
        def go(lookup=p.lookup, keys=keys):
            for _ in range(passes):
                for k in keys:
                    lookup(k)
        cases[impl] = (go, n_keys * passes)
    from uhashring import HashRing

    ring = HashRing(nodes=nodes)

    def uh(get=ring.get_node, keys=keys):
        for _ in range(passes):
            for k in keys:
                get(k)
    cases["uhashring"] = (uh, n_keys * passes)
    return cases


def placement_quality(n_nodes: int = 100, n_keys: int = 100_000) -> dict:
    """Max/mean load under bounded loads and the share of keys moved by adding one node."""
    mod = twins("placement").get("c") or twins("placement")["py"]
    keys = [f"tenant-{i}" for i in range(n_keys)]
    out = {"nodes": n_nodes, "keys": n_keys, "ideal_moved": 1 / (n_nodes + 1)}

    def build(eps, extra=False):
        p = mod.Placement(eps=eps)
        for i in range(n_nodes):
            p.add_node(f"node-{i}")
        if extra:
            p.add_node("node-new")
        return p

    base = build(0.25)
    before = [base.lookup(k) for k in keys]
    counts = {}
    for node in before:
        counts[node] = counts.get(node, 0) + 1
    out["plain_max_over_mean"] = max(counts.values()) / (n_keys / n_nodes)
    base.add_node("node-new")
    out["plain_moved"] = sum(base.lookup(k) != b for k, b in zip(keys, before)) / n_keys
    for eps in (0.10, 0.25):
        p = build(eps)
        first = [p.assign(k) for k in keys]
        loads = p.loads().values()
        q = build(eps, extra=True)
        second = [q.assign(k) for k in keys]
        tag = f"{1 + eps:.2f}"
        out[f"bounded_{tag}_max_over_mean"] = max(loads) / (n_keys / n_nodes)
        out[f"bounded_{tag}_cap_over_mean"] = math.ceil((1 + eps) * n_keys / n_nodes) / (
            n_keys / n_nodes)
        out[f"bounded_{tag}_moved"] = sum(a != b for a, b in zip(first, second)) / n_keys
    return out


def loop_ns(n: int = 20000, repeats: int = 5) -> float:
    """The Python loop's own cost per iteration, included in every figure above."""
    data = list(range(n))

    def go(data=data):
        for _ in data:
            pass
    return _median_ns(go, n, repeats)


def run(quick: bool = False) -> dict:
    """All hot-path figures (ns per op, ratios, placement quality); ``quick`` cuts repeats."""
    repeats = 3 if quick else 5
    passes = 5 if quick else 20
    figures: dict = {"repeats": repeats, "loop_ns": loop_ns(repeats=repeats)}
    for section, cases in (("ratelimit", ratelimit_cases(passes=passes)),
                           ("router", router_cases(n=4000 if quick else 20000)),
                           ("placement", placement_cases(passes=passes))):
        figures[section] = {name: round(_median_ns(fn, ops, repeats), 1)
                            for name, (fn, ops) in cases.items()}
    rl, rt, pl = figures["ratelimit"], figures["router"], figures["placement"]
    figures["ratios"] = {
        "ratelimit_c_vs_limits": round(rl["limits"] / rl["c"], 1),
        "ratelimit_c_vs_py": round(rl["py"] / rl["c"], 1),
        "router_c_vs_random_choices": round(rt["random.choices"] / rt["c"], 1),
        "router_c_vs_py": round(rt["py"] / rt["c"], 1),
        "placement_c_vs_uhashring": round(pl["uhashring"] / pl["c"], 1),
        "placement_c_vs_py": round(pl["py"] / pl["c"], 1),
    }
    figures["placement_quality"] = {k: round(v, 4) for k, v in placement_quality(
        n_keys=20_000 if quick else 100_000).items()}
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))

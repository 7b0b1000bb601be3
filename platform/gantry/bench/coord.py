"""10. Coordination latency (issue 13): each /v1/coord operation through the gateway, one
client making one request at a time on one keep-alive connection (the synchronous SDK,
``gantry.coord.Coord``), against its floor: the nearest plain redis-py operation on the same
Redis (the run's own redis-server), measured in the same round:

    HTTP round trip       GET /healthz (no key, no Redis)    PING
    lock acquire+release  try_lock + release (2 calls)       redis-py Lock: SET NX PX + release script
    state set             PUT /v1/coord/state/KEY            HSET
    state get             GET /v1/coord/state/KEY            HGET
    queue put             POST /v1/coord/queue/put           LPUSH
    queue get+ack         get + ack (2 calls)                LMOVE to a taken list + LREM (2 commands)

The HTTP round trip is context (what any call costs before the gateway does anything), not
a goal.  Per round every operation is timed N times each way (which side goes first
alternates by round); the figures are each round's own p50 and p99, then the median
[min-max] over rounds, and the p50 gap is paired within a round.  The client runs in the
bench process; every loop is bounded by N.
"""
from __future__ import annotations

import time
import uuid
from typing import Callable

from .stats import percentile, summary

OPERATIONS = ("http", "lock", "state_set", "state_get", "queue_put", "queue_get_ack")
LABELS = {"http": "HTTP round trip (/healthz vs PING)", "lock": "lock acquire+release (2 calls)",
          "state_set": "state set", "state_get": "state get", "queue_put": "queue put",
          "queue_get_ack": "queue get+ack (2 calls)"}
FLOORS = {"http": "PING", "lock": "redis-py Lock (SET NX PX, release script)", "state_set": "HSET",
          "state_get": "HGET", "queue_put": "LPUSH", "queue_get_ack": "LMOVE + LREM"}
GOAL_OPS = OPERATIONS[1:]     # what the goal is judged on (the round trip is context)
WARMUP = 50


def plan(quick: bool) -> dict:
    """Samples per operation and side in a round, and rounds (quick: about 10 s in all)."""
    return {"samples": 300, "rounds": 2} if quick else {"samples": 1000, "rounds": 5}


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """N calls of FN, one at a time: each one's milliseconds, sorted."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return out


def round_figures(samples: dict[str, dict[str, list[float]]]) -> dict:
    """One round's {op: {gateway: {p50, p99}, redis: {p50, p99}, gap_p50}} from sorted samples (ms)."""
    out = {}
    for op, sides in samples.items():
        row = {side: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for side, v in sides.items()}
        row["gap_p50"] = row["gateway"]["p50"] - row["redis"]["p50"]
        out[op] = row
    return out


def summarise(rounds: list[dict]) -> dict:
    """Per operation: the median [min-max] over rounds of each side's p50 and p99 and of the
    paired p50 gap."""
    out = {}
    for op in rounds[0]:
        out[op] = {side: {q: summary([r[op][side][q] for r in rounds], 3) for q in ("p50", "p99")}
                   for side in ("gateway", "redis")}
        out[op]["gap_p50"] = summary([r[op]["gap_p50"] for r in rounds], 3)
    return out


def worst_gap(ops: dict) -> tuple[str | None, float | None]:
    """The goal operation with the largest median p50 gap: (name, gap ms)."""
    gaps = [(op, ops[op]["gap_p50"]["median"]) for op in GOAL_OPS
            if op in ops and ops[op]["gap_p50"]["median"] is not None]
    return max(gaps, key=lambda x: x[1]) if gaps else (None, None)


def _operations(url: str, key: str, redis_url: str, ns: str):
    """(the clients, {op: (through the gateway, the floor)})."""
    import redis

    from ..coord import Coord

    c = Coord(url, key)
    r = redis.Redis.from_url(redis_url)
    state_key, queue = f"{ns}/k", f"{ns}/q"
    floor = {"lock": f"{ns}:lock", "hash": f"{ns}:h", "list": f"{ns}:l", "taken": f"{ns}:taken"}

    def healthz():
        conn = c._conn()
        conn.request("GET", "/healthz")
        conn.getresponse().read()

    def lock_cycle():
        lk = c.try_lock(f"{ns}/lock", ttl=30)
        if lk is None:
            raise RuntimeError("the bench lock was not free")
        lk.release()

    def floor_lock():
        lk = r.lock(floor["lock"], timeout=30)
        if not lk.acquire(blocking=False):
            raise RuntimeError("the floor's lock was not free")
        lk.release()

    def get_ack():
        item = c.get(queue, visibility=30)
        if item is None:
            raise RuntimeError("the bench queue ran dry")
        c.ack(item)

    def floor_get_ack():
        value = r.lmove(floor["list"], floor["taken"], "RIGHT", "LEFT")
        if value is None:
            raise RuntimeError("the floor's list ran dry")
        r.lrem(floor["taken"], 1, value)

    ops = {
        "http": (healthz, r.ping),
        "lock": (lock_cycle, floor_lock),
        "state_set": (lambda: c.set_state(state_key, {"v": 1}), lambda: r.hset(floor["hash"], "k", '{"v":1}')),
        "state_get": (lambda: c.get_state(state_key), lambda: r.hget(floor["hash"], "k")),
        # put before get+ack in every round: the gets take what the puts left
        "queue_put": (lambda: c.put(queue, {"v": 1}), lambda: r.lpush(floor["list"], '{"v":1}')),
        "queue_get_ack": (get_ack, floor_get_ack),
    }
    return c, r, floor, ops


def measure(ctx) -> dict:
    stack, p = ctx.stack, plan(ctx.quick)
    ns = "bench-coord-" + uuid.uuid4().hex[:8]
    c, r, floor, ops = _operations(stack.url, stack.api_key, stack.redis.url, ns)
    rounds: list[dict] = []
    try:
        for op in OPERATIONS:                       # connections, scripts, the renewal thread
            for fn in ops[op]:
                timed(fn, WARMUP)
        longest = 0.0
        for i in range(p["rounds"]):
            if i and not ctx.budget.ok(longest * 1.2):
                break
            t0 = time.monotonic()
            samples: dict[str, dict[str, list[float]]] = {}
            for op in OPERATIONS:
                through, plain = ops[op]
                if i % 2 == 0:
                    g = timed(through, p["samples"])
                    f = timed(plain, p["samples"])
                else:
                    f = timed(plain, p["samples"])
                    g = timed(through, p["samples"])
                samples[op] = {"gateway": g, "redis": f}
            rounds.append(round_figures(samples))
            longest = max(longest, time.monotonic() - t0)
    finally:
        c.close()
        r.delete(*floor.values())
        r.close()
    return {
        "client": "the synchronous SDK (gantry.coord.Coord: http.client, one keep-alive connection) and "
                  "redis-py (one connection), both in the bench process, one request at a time",
        "samples_per_round": p["samples"], "rounds": len(rounds), "rounds_planned": p["rounds"],
        "floors": FLOORS, "operations": summarise(rounds),
        "gateway_settings": "the bench platform's (stack.GATEWAY_ENV): the coordination rate limit raised so "
                            "that it never refuses the run (its decision still runs on every call)",
    }

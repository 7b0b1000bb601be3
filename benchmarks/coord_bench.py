"""Coordination latency through the gateway, against redis-py on the same Redis as the floor.

    python benchmarks/coord_bench.py [--redis-url redis://127.0.0.1:6379/13] [-n 2000] [--json out.json]

Starts a gateway process on loopback (GANTRY_ADMIN_RATE_LIMIT=0), then, one client, one
request at a time: lock acquire+release (try_lock and release: two calls), state get and
set, queue put and get+ack (two calls), and /healthz (no auth, no Redis: what HTTP alone costs), with the synchronous SDK (``gantry.coord.Coord``,
one keep-alive connection).  The floor is the nearest plain redis-py operation on the same
Redis in the same run: redis-py's Lock (SET NX PX, release script), HGET, HSET, LPUSH,
RPOP.  Prints p50/p99 (ms) and writes them as JSON.  Every loop is bounded by -n.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "platform"), os.path.join(ROOT, "runtime")]

import redis  # noqa: E402

from gantry.coord import Coord  # noqa: E402
from gantry.up import free_port  # noqa: E402


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _pcts(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": statistics.median(samples), "p99": q[98], "n": len(samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", default=os.environ.get("GANTRY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    ap.add_argument("-n", type=int, default=2000, help="samples per operation (bounded)")
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "coord_bench.json"))
    args = ap.parse_args()
    n = max(100, min(args.n, 100_000))

    key = "gk_bench_" + uuid.uuid4().hex
    port = free_port()
    env = {**os.environ, "GANTRY_REDIS_URL": args.redis_url, "GANTRY_GATEWAY_PORT": str(port),
           "GANTRY_ADMIN_KEY_HASH": hashlib.sha256(key.encode()).hexdigest(), "GANTRY_ADMIN_RATE_LIMIT": "0",
           "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "platform"), os.path.join(ROOT, "runtime")])}
    gw = subprocess.Popen([sys.executable, "-m", "gantry.daemons", "gateway"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or gw.poll() is not None:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.1)
        r = redis.Redis.from_url(args.redis_url)
        c = Coord(url, key)
        ns = "bench-" + uuid.uuid4().hex[:6]
        results: dict[str, dict] = {}

        def lock_cycle():
            lk = c.try_lock(ns + "/lock", ttl=30)
            lk._stop.set()        # the renewal thread is not what is measured
            lk.release()

        def floor_lock():
            lk = r.lock(ns + ":lock", timeout=30)
            lk.acquire(blocking=False)
            lk.release()

        queue = ns + "/q"

        def get_ack():
            c.ack(c.get(queue, visibility=30))

        def healthz():
            conn = c._conn()
            conn.request("GET", "/healthz")
            conn.getresponse().read()

        ops = [
            ("HTTP round trip", healthz, lambda: r.ping()),     # the floor of any call: /healthz vs PING
            ("lock acquire+release", lock_cycle, floor_lock),
            ("state set", lambda: c.set_state(ns + "/k", {"v": 1}), lambda: r.hset(ns + ":h", "k", '{"v":1}')),
            ("state get", lambda: c.get_state(ns + "/k"), lambda: r.hget(ns + ":h", "k")),
            ("queue put", lambda: c.put(queue, {"v": 1}), lambda: r.lpush(ns + ":l", '{"v":1}')),
            ("queue get+ack", get_ack, lambda: r.rpop(ns + ":l")),
        ]
        for name, through, floor in ops:
            _timed(through, 50)                                   # warm connections and scripts
            _timed(floor, 50)
            results[name] = {"gateway": _pcts(_timed(through, n)), "redis-py": _pcts(_timed(floor, n))}
        c.close()
        r.delete(ns + ":h", ns + ":l", ns + ":lock")
        r.close()
    finally:
        gw.terminate()
        gw.wait(10)

    print(f"{'operation':<22} {'gateway p50':>11} {'p99':>7} {'redis-py p50':>13} {'p99':>7} {'p50 gap':>8}  (ms, n={n})")
    for name, row in results.items():
        g, f = row["gateway"], row["redis-py"]
        print(f"{name:<22} {g['p50']:>11.3f} {g['p99']:>7.3f} {f['p50']:>13.3f} {f['p99']:>7.3f} "
              f"{g['p50'] - f['p50']:>8.3f}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as out:
        json.dump({"n": n, "results": results, "goal": "gateway p50 within 0.5 ms of the redis-py floor"}, out, indent=2)
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

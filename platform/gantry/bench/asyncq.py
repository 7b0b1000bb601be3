"""9. Async invocations, on a trivial echo with one warm instance (min = max = 1 instance):

- **submissions per second**: N submissions (``POST /v1/invoke/NAME/async``, distinct
  bodies) from C concurrent clients, each on its own connection opened for the run; beside
  it, in the same round, the same client sending the same number of sync invokes
  (``POST /v1/invoke/NAME``) to the same function: the ratio is paired per round.  Every
  round waits until the submitted work has run (all N records settled) before the next
  measurement, and reports how fast the dispatcher ran it (N over first created to last
  finished, on the records).
- **queue-to-start latency**: ``started - created`` on each invocation's record (both
  stamped by the gateway's clock: ``created`` at submit, ``started`` when the dispatcher
  claims it), for invocations submitted one at a time and in a concurrent burst; and
  submit-to-settled as a caller sees it (POST, then ``GET /v1/invocations/ID?wait=`` until
  it shows a settled state).

The client runs in its own process (aiohttp on uvloop), as the scale burst does:
``python -m gantry.bench.asyncq`` reads its job as JSON on stdin and prints one JSON line.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from .. import keys
from ..invocations.model import SETTLED
from . import functions
from .stats import percentile, summary

NAME = "bench-async-echo"
CLIENTS = 64
SETTLED_STATES = {str(s) for s in SETTLED}


def plan(quick: bool) -> dict:
    """How much each part does (quick: fewer submissions, rounds and samples)."""
    if quick:
        return {"submissions": 300, "rounds": 3, "singles": 30, "burst": 50}
    return {"submissions": 2000, "rounds": 5, "singles": 50, "burst": 50}


# --- the client (its own process) -----------------------------------------------------------------

async def _rate(cfg: dict) -> dict:
    """N POSTs from C clients, each with its own single connection; every request a distinct body."""
    import aiohttp

    n, clients, url, headers = int(cfg["n"]), int(cfg["clients"]), cfg["url"], cfg["headers"]
    timeout = aiohttp.ClientTimeout(total=60)
    sessions = [aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=1))
                for _ in range(clients)]
    statuses: dict[str, int] = {}
    ids: list[str] = []
    seconds: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))

    async def client(c: int, session) -> None:
        for i in counter:
            body = json.dumps({"msg": "bench", "client": c, "n": i}).encode()
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    data = await resp.read()
                    status = resp.status
            except Exception as exc:  # noqa: BLE001 - counted, reported
                status, data = -1, repr(exc).encode()
            seconds.append(time.perf_counter() - t)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 202:
                ids.append(json.loads(data)["id"])
            elif status != 200 and len(errors) < 5:
                errors.append(f"{status} {data[:160]!r}")

    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(c, s) for c, s in enumerate(sessions)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    seconds.sort()
    return {"n": n, "wall_s": wall, "statuses": statuses, "ids": ids, "errors": errors,
            "client_cores": cpu / wall if wall else None,
            "p50_ms": percentile(seconds, 50) * 1000, "p99_ms": percentile(seconds, 99) * 1000}


async def _latency(cfg: dict) -> dict:
    """COUNT invocations, one at a time on one keep-alive connection (burst false) or all at
    once on a connection each (burst true): each POSTed, then read with ?wait= until settled."""
    import aiohttp

    base, name, headers, count = cfg["base"], cfg["name"], cfg["headers"], int(cfg["count"])
    wait = float(cfg.get("wait", 10))
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0, force_close=True) if cfg["burst"] else aiohttp.TCPConnector(limit=1)

    async def one(session, i: int, gate: asyncio.Event | None) -> dict:
        if gate is not None:
            await gate.wait()
        body = json.dumps({"msg": "bench", "n": i}).encode()
        t0 = time.perf_counter()
        async with session.post(f"{base}/v1/invoke/{name}/async", data=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status != 202:
                return {"error": f"submit: {resp.status} {data[:160]!r}"}
        t_ack = time.perf_counter()
        inv_id = json.loads(data)["id"]
        view: dict = {}
        for _ in range(20):                  # bounded: 20 waits of WAIT seconds at most
            async with session.get(f"{base}/v1/invocations/{inv_id}?wait={wait:g}", headers=headers) as resp:
                view = await resp.json()
            if view.get("state") in SETTLED_STATES:
                break
        t_settled = time.perf_counter()
        return {"id": inv_id, "state": view.get("state"), "created": view.get("created"),
                "started": view.get("started"), "finished": view.get("finished"),
                "submit_ms": (t_ack - t0) * 1000, "settled_ms": (t_settled - t0) * 1000}

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if cfg["burst"]:
            gate = asyncio.Event()
            tasks = [asyncio.create_task(one(session, i, gate)) for i in range(count)]
            await asyncio.sleep(0)
            gate.set()
            records = await asyncio.gather(*tasks)
        else:
            records = [await one(session, i, None) for i in range(count)]
    return {"records": records}


def _client_main() -> int:
    cfg = json.load(sys.stdin)
    job = _rate if cfg["job"] == "rate" else _latency
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    print(json.dumps(runner(job(cfg))))
    return 0


def run_client(cfg: dict, timeout: float = 180) -> dict:
    """Run one client job in its own process; its JSON output."""
    proc = subprocess.Popen([sys.executable, "-m", "gantry.bench.asyncq"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(json.dumps(cfg).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"the async bench client ({cfg['job']}) ran past {timeout:g}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the async bench client ({cfg['job']}) failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-800:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


# --- pure figures -----------------------------------------------------------------------------------

def latency_figures(records: list[dict]) -> dict:
    """One batch's p50/p99 (ms) of queue-to-start (started - created, the records' own
    clocks), created-to-finished, and the caller's submit ack and submit-to-settled."""
    good = [r for r in records if r.get("state") == "succeeded" and r.get("started") is not None
            and r.get("created") is not None]
    out: dict = {"n": len(records), "succeeded": len(good),
                 "not_succeeded": [r.get("state") or r.get("error") for r in records if r not in good][:5]}
    series = {"queue_to_start_ms": [(r["started"] - r["created"]) * 1000 for r in good],
              "created_to_finished_ms": [(r["finished"] - r["created"]) * 1000 for r in good
                                         if r.get("finished") is not None],
              "submit_ack_ms": [r["submit_ms"] for r in good],
              "submit_to_settled_ms": [r["settled_ms"] for r in good]}
    for name, values in series.items():
        values.sort()
        out[name] = {"p50": percentile(values, 50) if values else None,
                     "p99": percentile(values, 99) if values else None}
    return out


def summarise_latency(batches: list[dict]) -> dict:
    """Per figure and percentile: the median [min-max] of the batches' own p50s and p99s."""
    out: dict = {"batches": len(batches), "invocations": sum(b["n"] for b in batches),
                 "succeeded": sum(b["succeeded"] for b in batches),
                 "not_succeeded": [x for b in batches for x in b["not_succeeded"]][:5]}
    for name in ("queue_to_start_ms", "created_to_finished_ms", "submit_ack_ms", "submit_to_settled_ms"):
        out[name] = {q: summary([b[name][q] for b in batches], 2) for q in ("p50", "p99")}
    return out


def rate_figures(run: dict, expect: int) -> dict:
    ok = run["statuses"].get(str(expect), 0)
    return {"requests": run["n"], "ok": ok, "errors": run["n"] - ok, "error_samples": run["errors"],
            "rps": run["n"] / run["wall_s"] if run["wall_s"] else None,
            "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "client_cores": run["client_cores"]}


# --- the measurement ------------------------------------------------------------------------------

def wait_settled(redis_url: str, ids: list[str], timeout: float) -> dict:
    """Poll the records until every one of IDS is settled (bounded by TIMEOUT): the states
    counted, and the dispatcher's rate (N over first created to last finished)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pipe = r.pipeline(transaction=False)
            for i in ids:
                pipe.hmget(keys.invocation(i), "state", "created", "finished")
            rows = [[(v.decode() if v else None) for v in row] for row in pipe.execute()]
            states = [row[0] for row in rows]
            if all(s in SETTLED_STATES for s in states) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        r.close()
    counts: dict[str, int] = {}
    for s in states:
        counts[str(s)] = counts.get(str(s), 0) + 1
    created = [float(row[1]) for row in rows if row[1]]
    finished = [float(row[2]) for row in rows if row[2]]
    span = (max(finished) - min(created)) if created and finished else None
    return {"states": counts, "all_settled": all(s in SETTLED_STATES for s in states),
            "created_to_last_finished_s": span, "executed_per_s": len(ids) / span if span else None}


def measure(ctx) -> dict:
    stack, p = ctx.stack, plan(ctx.quick)
    functions.deploy_warm_echo(ctx, NAME, "async")
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    urls = {"async": f"{stack.url}/v1/invoke/{NAME}/async", "sync": f"{stack.url}/v1/invoke/{NAME}"}

    def rate(kind: str, n: int) -> tuple[dict, dict | None]:
        run = run_client({"job": "rate", "url": urls[kind], "n": n, "clients": CLIENTS, "headers": headers})
        drained = wait_settled(stack.redis.url, run["ids"], 120) if kind == "async" else None
        return rate_figures(run, 202 if kind == "async" else 200), drained

    def latency(kind: str) -> dict:
        out = run_client({"job": "latency", "base": stack.url, "name": NAME, "headers": headers,
                          "count": p["burst" if kind == "burst" else "singles"], "burst": kind == "burst"})
        return latency_figures(out["records"])

    rate("async", 100)          # warm-up: connections, the dispatcher's loop, the instance
    rate("sync", 100)
    # A round: the submissions and the sync invokes (order alternating; the submitted work has
    # run before anything else starts), then the one-at-a-time batch and the burst, with the
    # queue empty and the instance warm.  A round starts only if one more fits the ceiling.
    rounds: list[dict] = []
    batches: dict[str, list[dict]] = {"single": [], "burst": []}
    longest = 0.0
    for r in range(p["rounds"]):
        if r and not ctx.budget.ok(longest * 1.2):
            break
        t0 = time.monotonic()
        one: dict = {}
        for kind in (("async", "sync") if r % 2 == 0 else ("sync", "async")):
            one[kind], drained = rate(kind, p["submissions"])
            if drained is not None:
                one["drained"] = drained
        rounds.append(one)
        stack.wait(f"a ready {NAME} instance", lambda: stack.ready_instances(NAME), 30)
        for kind in ("single", "burst"):
            batches[kind].append(latency(kind))
        longest = max(longest, time.monotonic() - t0)

    stack.delete(NAME)
    ctx.image_prefixes.append(f"gantry/fn-{NAME}")
    a = [x["async"] for x in rounds]
    s = [x["sync"] for x in rounds]
    return {
        "function": {"name": NAME, "handler": "async JSON echo", "cpu": 2.0, "concurrency": 64,
                     "instances": "min 1, max 1 (warm)"},
        "client": "aiohttp on uvloop in its own process; submissions: each client its own connection, "
                  "opened for the run; latency: one keep-alive connection (one at a time), a connection per "
                  "invocation (burst)",
        "clients": CLIENTS, "submissions_per_round": p["submissions"], "rounds": len(rounds),
        "rounds_planned": p["rounds"],
        "submit": {"rps": summary([x["rps"] for x in a], 1), "p50_ms": summary([x["p50_ms"] for x in a]),
                   "p99_ms": summary([x["p99_ms"] for x in a]), "requests": sum(x["requests"] for x in a),
                   "accepted": sum(x["ok"] for x in a), "errors": sum(x["errors"] for x in a),
                   "error_samples": [e for x in a for e in x["error_samples"]][:5],
                   "client_cores": summary([x["client_cores"] for x in a], 2)},
        "sync": {"rps": summary([x["rps"] for x in s], 1), "p50_ms": summary([x["p50_ms"] for x in s]),
                 "p99_ms": summary([x["p99_ms"] for x in s]), "requests": sum(x["requests"] for x in s),
                 "ok": sum(x["ok"] for x in s), "errors": sum(x["errors"] for x in s),
                 "error_samples": [e for x in s for e in x["error_samples"]][:5],
                 "client_cores": summary([x["client_cores"] for x in s], 2)},
        "submit_vs_sync_rps": summary([x["async"]["rps"] / x["sync"]["rps"] for x in rounds
                                       if x["async"]["rps"] and x["sync"]["rps"]], 2),
        "executed_per_s": summary([x["drained"]["executed_per_s"] for x in rounds], 1),
        "drained": {"all_settled": all(x["drained"]["all_settled"] for x in rounds),
                    "states": _sum_counts(x["drained"]["states"] for x in rounds)},
        "latency": {"single": {"per_batch": p["singles"], **summarise_latency(batches["single"])},
                    "burst": {"per_batch": p["burst"], **summarise_latency(batches["burst"])},
                    "wait_poll": "GET ?wait= re-reads the record every 10 ms, growing to 200 ms "
                                 "(gateway/async_api.py), so submit-to-settled includes that step"},
    }


def _sum_counts(counts) -> dict:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


if __name__ == "__main__":
    sys.exit(_client_main())

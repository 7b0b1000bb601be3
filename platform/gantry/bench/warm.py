"""1. Warm invocation of a trivial JSON echo at 1 and 64 concurrent clients, three ways to
the same container: directly on its published loopback port (the floor), through nginx as
a plain reverse proxy, and through the gateway.  Rounds interleave the three paths so noise
from elsewhere on the machine falls on all of them alike; each figure is the median over
rounds with min and max."""
from __future__ import annotations

import os

from . import functions, loadgen
from .nginx import Nginx
from .stats import ratio, summary
from ..up import free_port

NAME = "bench-echo"
BODY = '{"msg": "hello", "n": 1}'
CONCURRENCY = (1, 64)
PATHS = ("direct", "nginx", "gateway")


def measure(ctx) -> dict:
    stack, quick = ctx.stack, ctx.quick
    duration = 1 if quick else 3
    rounds = 3 if quick else 5
    inst = functions.deploy_warm_echo(ctx, NAME, "warm")
    host, port = inst["address"].rsplit(":", 1)
    urls = {"direct": f"http://{host}:{port}/invoke", "gateway": f"{stack.url}/v1/invoke/{NAME}"}
    nginx = Nginx(os.path.join(stack.tmp, "nginx"), int(port), free_port())
    nginx.start()
    ctx.cleanups.append(nginx.stop)
    urls["nginx"] = f"http://127.0.0.1:{nginx.port}/invoke"
    script = loadgen.write_script(stack.tmp)
    auth = f"Bearer {stack.api_key}"
    # The container answers only with its instance key: wrk sends it directly and through
    # nginx (which passes it on), so the key never appears in nginx's config or the report.
    key = stack.instance_key(inst["id"])
    pids = {"gateway": stack.pid("gateway"), "nginx": nginx.pid}

    def one(path: str, conns: int, seconds: float) -> dict:
        return loadgen.run_wrk_measuring(pids.get(path), urls[path], script, connections=conns, duration=seconds,
                                         body=BODY, auth=auth, instance_key=key if path != "gateway" else None)

    for path in PATHS:  # warm-up: connection pools, the runtime, nginx's upstream keep-alive
        one(path, 64, 1)
    runs: dict = {p: {c: [] for c in CONCURRENCY} for p in PATHS}
    done_rounds = 0
    for r in range(rounds):
        if r and not ctx.budget.ok(len(PATHS) * len(CONCURRENCY) * (duration + 1)):
            break
        order = PATHS[r % 3:] + PATHS[:r % 3]
        for conns in CONCURRENCY:
            for path in order:
                runs[path][conns].append(one(path, conns, duration))
        done_rounds += 1
    out: dict = {"function": {"name": NAME, "handler": "async JSON echo", "cpu": 2.0, "concurrency": 64,
                              "log_level": "warning"},
                 "body": BODY, "duration_s": duration, "rounds": done_rounds, "rounds_planned": rounds,
                 "load_generator": "wrk (own process), Lua script for the POST body and Authorization header",
                 "nginx_config": nginx.config, "paths": {}}
    for path in PATHS:
        out["paths"][path] = {}
        for conns in CONCURRENCY:
            rs = runs[path][conns]
            out["paths"][path][str(conns)] = {
                "rps": summary([x["rps"] for x in rs], 1),
                "p50_ms": summary([x["p50_ms"] for x in rs]),
                "p99_ms": summary([x["p99_ms"] for x in rs]),
                "errors": sum(x["errors"] for x in rs),
                "requests": sum(x["requests"] for x in rs),
                "wrk_cpu_cores": summary([x["wrk_cpu_cores"] for x in rs], 2),
                "proxy_cpu_cores": summary([x["proxy_cpu_cores"] for x in rs if x["proxy_cpu_cores"] is not None], 2),
                "proxy_cpu_us_per_request": summary([x["proxy_cpu_cores"] / x["rps"] * 1e6 for x in rs
                                                     if x["proxy_cpu_cores"] is not None and x["rps"]], 1),
                "wrk_threads": rs[0]["wrk_threads"] if rs else None,
            }
    p = out["paths"]
    out["ratios"] = {}
    for conns in CONCURRENCY:
        g, d, n = (runs[k][conns] for k in ("gateway", "direct", "nginx"))
        gs, ds, ns = (p[k][str(conns)] for k in ("gateway", "direct", "nginx"))
        # Differences and ratios are paired within a round (same minute, same neighbours).
        out["ratios"][str(conns)] = {
            "gateway_over_direct_p50_ms": summary([a["p50_ms"] - b["p50_ms"] for a, b in zip(g, d)]),
            "gateway_over_direct_p99_ms": summary([a["p99_ms"] - b["p99_ms"] for a, b in zip(g, d)]),
            "nginx_over_direct_p50_ms": summary([a["p50_ms"] - b["p50_ms"] for a, b in zip(n, d)]),
            "nginx_over_direct_p99_ms": summary([a["p99_ms"] - b["p99_ms"] for a, b in zip(n, d)]),
            "gateway_rps_vs_nginx": summary([a["rps"] / b["rps"] for a, b in zip(g, n) if b["rps"]], 2),
            "gateway_p99_vs_nginx": summary([a["p99_ms"] / b["p99_ms"] for a, b in zip(g, n) if b["p99_ms"]], 2),
            "gateway_rps_vs_direct": summary([a["rps"] / b["rps"] for a, b in zip(g, d) if b["rps"]], 2),
            "nginx_rps_vs_direct": summary([a["rps"] / b["rps"] for a, b in zip(n, d) if b["rps"]], 2),
            "gateway_p50_vs_direct": ratio(gs["p50_ms"]["median"], ds["p50_ms"]["median"]),
            "nginx_p50_vs_direct": ratio(ns["p50_ms"]["median"], ds["p50_ms"]["median"]),
        }
    stack.delete(NAME)
    return out


"""1. Warm invocation of a trivial JSON echo at 1 and 64 concurrent clients, three ways to
the same container: directly on its published loopback port (the floor), through nginx as
a plain reverse proxy, and through the gateway.  Rounds interleave the three paths so noise
from elsewhere on the machine falls on all of them alike; each figure is the median over
rounds with min and max.  A full run also measures, at 64 clients, nginx with two worker
processes and the gateway with two workers (``--workers 2``: SO_REUSEPORT) in the same rounds."""
from __future__ import annotations

import os

from . import functions, loadgen
from .nginx import Nginx
from .stack import GATEWAY_ENV
from .stats import ratio, summary
from ..up import free_port

NAME = "bench-echo"
BODY = '{"msg": "hello", "n": 1}'
CONCURRENCY = (1, 64)
PATHS = ("direct", "nginx", "gateway")
WORKER_PATHS = ("nginx_2w", "gateway_2w")   # two processes each; 64 clients, full runs only


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
    pids = {"gateway": stack.pid("gateway"), "nginx": nginx.pid}
    extra = () if quick else WORKER_PATHS
    if extra:
        nginx2 = Nginx(os.path.join(stack.tmp, "nginx-2w"), int(port), free_port(), workers=2)
        nginx2.start()
        ctx.cleanups.append(nginx2.stop)
        gw_port = free_port()
        stack._spawn("gateway-2w", "gateway", {**GATEWAY_ENV, "GANTRY_GATEWAY_PORT": str(gw_port),
                                               "GANTRY_GATEWAY_WORKERS": "2", "GANTRY_ASYNC_DISPATCH": "0",
                                               "GANTRY_GATEWAY_ID": "bench-2w"})
        ctx.cleanups.append(lambda: stack.stop_process("gateway-2w"))
        stack.wait("the two-worker gateway", lambda: _both_workers(gw_port), 30)
        urls.update(nginx_2w=f"http://127.0.0.1:{nginx2.port}/invoke", gateway_2w=f"http://127.0.0.1:{gw_port}/v1/invoke/{NAME}")
        pids.update(nginx_2w=nginx2.pid, gateway_2w=stack.pid("gateway-2w"))
    script = loadgen.write_script(stack.tmp)
    auth = f"Bearer {stack.api_key}"
    # The container answers only with its instance key: wrk sends it directly and through
    # nginx (which passes it on), so the key never appears in nginx's config or the report.
    key = stack.instance_key(inst["id"])

    def one(path: str, conns: int, seconds: float) -> dict:
        return loadgen.run_wrk_measuring(pids.get(path), urls[path], script, connections=conns, duration=seconds,
                                         body=BODY, auth=auth, instance_key=None if path.startswith("gateway") else key)

    for path in PATHS + extra:  # warm-up: connection pools, the runtime, nginx's upstream keep-alive
        one(path, 64, 1)
    runs: dict = {p: {c: [] for c in CONCURRENCY} for p in PATHS}
    runs.update({p: {64: []} for p in extra})
    done_rounds = 0
    for r in range(rounds):
        if r and not ctx.budget.ok((len(PATHS) * len(CONCURRENCY) + len(extra)) * (duration + 1)):
            break
        order = PATHS[r % 3:] + PATHS[:r % 3]
        for conns in CONCURRENCY:
            for path in order + (extra[r % 2:] + extra[:r % 2] if conns == 64 else ()):
                runs[path][conns].append(one(path, conns, duration))
        done_rounds += 1
    out: dict = {"function": {"name": NAME, "handler": "async JSON echo", "cpu": 2.0, "concurrency": 64,
                              "log_level": "warning"},
                 "body": BODY, "duration_s": duration, "rounds": done_rounds, "rounds_planned": rounds,
                 "load_generator": "wrk (own process), Lua script for the POST body and Authorization header",
                 "nginx_config": nginx.config, "paths": {}}
    for path in PATHS + extra:
        out["paths"][path] = {}
        for conns in runs[path]:
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
    if extra:
        g1, n1, g2, n2 = (runs[k][64] for k in ("gateway", "nginx", "gateway_2w", "nginx_2w"))
        out["ratios"]["64"].update({
            "gateway_2w_rps_vs_nginx_2w": summary([a["rps"] / b["rps"] for a, b in zip(g2, n2) if b["rps"]], 2),
            "gateway_2w_p99_vs_nginx_2w": summary([a["p99_ms"] / b["p99_ms"] for a, b in zip(g2, n2) if b["p99_ms"]], 2),
            "gateway_2w_rps_vs_gateway": summary([a["rps"] / b["rps"] for a, b in zip(g2, g1) if b["rps"]], 2),
            "nginx_2w_rps_vs_nginx": summary([a["rps"] / b["rps"] for a, b in zip(n2, n1) if b["rps"]], 2),
        })
    stack.delete(NAME)
    return out


def _both_workers(port: int) -> bool:
    """Whether both workers of the gateway on PORT answer /healthz (new connections spread over them)."""
    from ..sdk import Client, GantryError

    seen = set()
    for _ in range(20):
        try:
            seen.add(Client(f"http://127.0.0.1:{port}", "").health(timeout=1)["gateway"])
        except (GantryError, OSError):
            return False
    return len(seen) == 2


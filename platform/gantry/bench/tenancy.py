"""8. What tenant resolution adds to a warm invocation: the same echo of a tenant, through the
same gateway, called three ways in interleaved rounds: with the platform admin key (the path
every invocation took before tenants: one hash compared), with one of the tenant's API keys
(looked up by id, kept by the gateway for 2 s), and with KEYS distinct tenant keys in turn
(what a platform with many callers meets: each key's cache entry is read from Redis again
every 2 s).  Differences are paired within a round."""
from __future__ import annotations

import os

from . import functions, loadgen
from .stats import summary

NAME = "bench-tenant-echo"
TENANT = "bench"
BODY = '{"msg": "hello", "n": 1}'
CONCURRENCY = (1, 64)
PATHS = ("admin_key", "tenant_key", "many_keys")
KEYS = 200

# Each request takes the next of BENCH_AUTHS (space-separated Authorization values).
LUA_MANY = r'''
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local auths = {}
for a in string.gmatch(os.getenv("BENCH_AUTHS") or "", "[^|]+") do auths[#auths + 1] = a end
local i = math.random(#auths)
request = function()
  i = i % #auths + 1
  wrk.headers["Authorization"] = auths[i]
  return wrk.format(nil)
end
''' + loadgen.LUA[loadgen.LUA.index("done = function"):]


def measure(ctx) -> dict:
    stack, quick = ctx.stack, ctx.quick
    duration = 1 if quick else 2
    rounds = 2 if quick else 4
    client = stack.client
    # "shared": the same network path as the other sections, so only resolution differs
    client.create_tenant(TENANT, isolation="shared")
    directory = functions.write_echo(ctx.fn_dir, NAME, "tenancy", cpu=2.0, min_instances=1, max_instances=1,
                                     concurrency=64)
    result = functions.build(ctx.docker, directory)
    spec = functions.spec_dict(result)
    spec.pop("tenant", None)
    client.deploy_image(spec, result.image, tenant=TENANT)
    qualified = f"{TENANT}.{NAME}"
    stack.wait(f"a ready {NAME} instance", lambda: stack.ready_instances(qualified), 90)
    keys = [client.create_key(tenant=TENANT, scope="invoke")["key"] for _ in range(KEYS)]
    many_script = os.path.join(stack.tmp, "many_keys.lua")
    with open(many_script, "w") as f:
        f.write(LUA_MANY)
    script = loadgen.write_script(stack.tmp)
    urls = {"admin_key": f"{stack.url}/v1/invoke/{qualified}", "tenant_key": f"{stack.url}/v1/invoke/{NAME}",
            "many_keys": f"{stack.url}/v1/invoke/{NAME}"}
    auths = {"admin_key": f"Bearer {stack.api_key}", "tenant_key": f"Bearer {keys[0]}"}
    os.environ["BENCH_AUTHS"] = "|".join(f"Bearer {k}" for k in keys)
    gateway_pid = stack.pid("gateway")

    def one(path: str, conns: int, seconds: float) -> dict:
        run = loadgen.run_wrk_measuring(gateway_pid, urls[path], many_script if path == "many_keys" else script,
                                        connections=conns, duration=seconds, body=BODY, auth=auths.get(path))
        cores = run["proxy_cpu_cores"]
        run["proxy_cpu_us_per_request"] = cores / run["rps"] * 1e6 if cores is not None and run["rps"] else None
        return run

    try:
        for path in PATHS:
            one(path, 64, 1)                 # warm-up: pools, key caches
        runs: dict = {p: {c: [] for c in CONCURRENCY} for p in PATHS}
        done = 0
        for r in range(rounds):
            if r and not ctx.budget.ok(len(PATHS) * len(CONCURRENCY) * (duration + 1)):
                break
            order = PATHS[r % 3:] + PATHS[:r % 3]
            for conns in CONCURRENCY:
                for path in order:
                    runs[path][conns].append(one(path, conns, duration))
            done += 1
    finally:
        os.environ.pop("BENCH_AUTHS", None)
    out: dict = {"function": NAME, "tenant": TENANT, "keys": KEYS, "duration_s": duration, "rounds": done,
                 "paths": {}, "ratios": {}}
    for path in PATHS:
        out["paths"][path] = {str(c): {
            "rps": summary([x["rps"] for x in runs[path][c]], 1),
            "p50_ms": summary([x["p50_ms"] for x in runs[path][c]]),
            "p99_ms": summary([x["p99_ms"] for x in runs[path][c]]),
            "errors": sum(x["errors"] for x in runs[path][c]),
            "requests": sum(x["requests"] for x in runs[path][c]),
            "gateway_cpu_us_per_request": summary([x["proxy_cpu_us_per_request"] for x in runs[path][c]], 1),
        } for c in CONCURRENCY}
    for c in CONCURRENCY:
        a = runs["admin_key"][c]
        out["ratios"][str(c)] = {
            f"{path}_over_admin_{q}_ms": summary([x[f"{q}_ms"] - y[f"{q}_ms"] for x, y in zip(runs[path][c], a)])
            for path in PATHS[1:] for q in ("p50", "p99")}
        for path in PATHS[1:]:
            out["ratios"][str(c)][f"{path}_rps_vs_admin"] = summary(
                [x["rps"] / y["rps"] for x, y in zip(runs[path][c], a) if y["rps"]], 3)
    stack.delete(qualified)
    client.delete_tenant(TENANT)      # its keys with it
    return out

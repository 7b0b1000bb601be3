"""Where a warm invocation's microseconds go in the gateway (docs/benchmarks.md, "Where a warm
invocation's microseconds go"; issue 16, part 1).

A bench stack (gantry.bench.stack: its own Redis, scheduler, worker) with the echo function
warm (one instance, as the bench's warm section deploys it), then extra gateway processes in
front of that instance, each sent the same requests one at a time on one keep-alive
connection (gantry.bench.instructions.sender):

``instructions NAME=CHECKOUT ...``
    each CHECKOUT's gateway (its platform/ and runtime/ on PYTHONPATH: compare two commits
    side by side) under valgrind's callgrind, WARMUP requests uncounted then COUNTED counted;
    plus one gateway of the first checkout counted while idle, for the instructions per second
    its background loops (load reports, cache refresh, shared rate limits) cost, which run by
    wall time and are subtracted: net instructions per request = (counted - rate x window) / N.
``profile``
    this checkout's gateway under cProfile; the profile's own time per request, grouped by
    where it is spent (functions called at least once per request only: start-up and the
    background loops left out).  cProfile inflates Python-level calls, so read the shares.

Run: PYTHONPATH=platform:runtime .venv/bin/python benchmarks/gateway_profile.py instructions old=../old new=.
     PYTHONPATH=platform:runtime .venv/bin/python benchmarks/gateway_profile.py profile
"""
from __future__ import annotations

import argparse
import collections
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import types

import docker

from gantry.bench import functions, instructions
from gantry.bench.observability import _healthy
from gantry.bench.stack import GATEWAY_ENV, Stack
from gantry.up import free_port

NAME = "profiled-echo"
BODY = b'{"msg": "hello", "n": 1}'
WARMUP, COUNTED = 200, 600
IDLE_SECONDS = 12.0
PROFILED = 3000
GROUPS = (("gantry/gateway/front", "front: parse, Call, answer"), ("gantry/gateway/upstream", "upstream client"),
          ("gantry/gateway/metrics", "metrics and usage"), ("gantry/gateway/usage", "metrics and usage"),
          ("prometheus_client", "metrics and usage"), ("gantry/gateway/tracing", "tracing"),
          ("gantry/gateway/invoke", "invoke: admission, pick, forward"),
          ("gantry/", "other gateway code: auth, cache, tenant limits, balancer"),
          ("asyncio", "asyncio"), ("uvloop", "asyncio"))


def _gateway_env(port: int, gateway_id: str) -> dict[str, str]:
    return {**GATEWAY_ENV, "GANTRY_GATEWAY_PORT": str(port), "GANTRY_ASYNC_DISPATCH": "0",
            "GANTRY_GATEWAY_ID": gateway_id}


def _sender(stack: Stack, port: int):
    return instructions.sender(port, f"/v1/invoke/{NAME}", BODY,
                               {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"})


def count_instructions(stack: Stack, checkouts: list[tuple[str, str]]) -> None:
    results = {}
    runs = [(name, root, False) for name, root in checkouts] + [("idle", checkouts[0][1], True)]
    for name, root, idle in runs:
        port, proc = free_port(), f"gateway-{name}"
        out_file = os.path.join(stack.tmp, f"callgrind-{name}.out")
        env = {**_gateway_env(port, f"profile-{name}"),
               "PYTHONPATH": f"{os.path.abspath(root)}/platform:{os.path.abspath(root)}/runtime"}
        stack._spawn(proc, "gateway", env, wrap=instructions.wrap(out_file))
        stack.wait(f"the {name} gateway under callgrind", lambda p=port: _healthy(p), 300, every=0.5)
        send = _sender(stack, port)
        for _ in range(WARMUP):
            send()
        if idle:
            ticks = 60
            results[name] = instructions.count(stack.pid(proc), out_file, lambda: time.sleep(IDLE_SECONDS / ticks),
                                               ticks)
        else:
            results[name] = instructions.count(stack.pid(proc), out_file, send, COUNTED)
        stack.stop_process(proc)
        print(f"{name}: {results[name]}", flush=True)
    idle = results.pop("idle")
    rate = idle["instructions"] / idle["seconds"]
    print(f"\nbackground: {rate / 1e6:.2f} M instructions per second (idle gateway, {idle['seconds']} s)")
    base = None
    for name, r in results.items():
        net = (r["instructions"] - rate * r["seconds"]) / r["requests"]
        base = base or net
        print(f"{name}: {r['per_request']:,} instructions per request counted, {net:,.0f} net of the background "
              f"({r['seconds']} s window)  {net / base:.3f}x")


def profile(stack: Stack) -> None:
    port = free_port()
    out = os.path.join(stack.tmp, "gateway.prof")
    env = {**os.environ, "GANTRY_REDIS_URL": stack.redis.url, **_gateway_env(port, "profile")}
    env.pop("GANTRY_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "cProfile", "-o", out, "-m", "gantry.daemons", "gateway"], env=env)
    try:
        stack.wait("the profiled gateway", lambda: _healthy(port), 60)
        send = _sender(stack, port)
        for _ in range(WARMUP):
            send()
        t0 = time.monotonic()
        for _ in range(PROFILED):
            send()
        wall = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    total = PROFILED + WARMUP
    groups: collections.Counter = collections.Counter()
    rows = []
    for (path, line, func), (_, calls, own, _, _) in pstats.Stats(out).stats.items():
        if calls < total * 0.9:
            continue
        group = next((g for key, g in GROUPS if key in path),
                     "socket writes and builtins" if path == "~" else "other: " + os.path.basename(path))
        groups[group] += own
        rows.append((own / total * 1e6, calls / total, f"{os.path.basename(path)}:{line} {func}"))
    print(f"{PROFILED} requests in {wall:.2f} s under cProfile ({wall / PROFILED * 1e6:.0f} µs each, client included)")
    whole = sum(groups.values())
    for group, own in groups.most_common():
        print(f"  {own / total * 1e6:7.1f} µs  {own / whole:6.1%}  {group}")
    print("heaviest functions (own time per request, calls per request):")
    for us, calls, name in sorted(rows, reverse=True)[:20]:
        print(f"  {us:6.1f} µs  {calls:4.1f}x  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("instructions", help="instructions per request of each checkout's gateway (callgrind)")
    i.add_argument("checkouts", nargs="+", metavar="NAME=CHECKOUT")
    sub.add_parser("profile", help="this checkout's gateway under cProfile, grouped")
    args = p.parse_args()
    stack = Stack.create(docker.from_env(timeout=300))
    stack.start()
    ctx = types.SimpleNamespace(stack=stack, docker=stack.docker, fn_dir=tempfile.mkdtemp(), cleanups=[])
    try:
        functions.deploy_warm_echo(ctx, NAME, "profiled")
        if args.what == "instructions":
            count_instructions(stack, [tuple(c.split("=", 1)) for c in args.checkouts])
        else:
            profile(stack)
    finally:
        try:
            stack.delete(NAME)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()

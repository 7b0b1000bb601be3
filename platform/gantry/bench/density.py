"""6. Density: how many functions this machine holds, and what a first call costs when the
node is full.  N functions with default manifests (0.5 CPU limit, 512 MiB) on a node of this
machine's own cores and memory (the default CPU overcommit), each invoked once in turn, then
all N again, one request at a time on a fresh connection.  A call finds its function warm,
or waits while the scheduler stops the least recently used idle instance and starts one
(reclaim + cold start).  Runs on a platform of its own, so the other sections' large node
does not hide the limit.  --quick: 6 functions on a node of 1 core, no overcommit (2 fit)."""
from __future__ import annotations

import time

from ..sdk import GantryError
from . import functions
from .stack import Stack
from .stats import percentile, summary

FULL, QUICK = 40, 6
QUICK_NODE = {"GANTRY_NODE_CPU": "1", "GANTRY_CPU_OVERCOMMIT": "1"}


def measure(ctx) -> dict:
    n = QUICK if ctx.quick else FULL
    directory = functions.write_echo(ctx.fn_dir, "bench-density", "density", cpu=0.5, memory="512Mi")
    built = functions.build(ctx.docker, directory)
    spec = functions.spec_dict(built)
    stack = Stack.create(ctx.docker, worker_env=QUICK_NODE if ctx.quick else {})
    try:
        stack.start()
        node = stack.client.nodes()[0]
        names = [f"density-{i:02d}" for i in range(n)]
        for name in names:
            stack.deploy({**spec, "name": name, "resources": {**spec["resources"], "cpu": 0.5, "memory": "512Mi"},
                          "scaling": {**spec["scaling"], "min_instances": 0, "max_instances": 1}}, built.image)
        rounds, statuses, cold = [], {}, [0, 0]
        for round_no in (0, 1):
            seconds = []
            for name in names:
                cold[round_no] += not stack.ready_instances(name)     # no instance to take it: a start
                t0 = time.perf_counter()
                try:
                    # streamed as before, so the call's time runs to the last byte
                    b"".join(stack.client.invoke(name, b'{"msg": "density"}', stream=True,
                                                 content_type="application/json"))
                    status = 200
                except GantryError as exc:
                    status = exc.status
                seconds.append(time.perf_counter() - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            rounds.append(seconds)
        live = sum(1 for c in stack.containers(instances_only=True) if c.get("State") == "running")
        every_call = sorted(s * 1000 for s in rounds[0] + rounds[1])
        return {
            "functions": n, "requests": 2 * n, "statuses": statuses,
            "failed_requests": sum(v for k, v in statuses.items() if k != "200"),
            "node": {"cpu_cores": node["capacity"]["cpu"] / 1000, "cpu_allocatable": node["allocatable"]["cpu"] / 1000,
                     "memory_gib": round(node["capacity"]["memory"] / 2**30, 1),
                     "settings": stack.worker_env or "detected (this machine), default overcommit"},
            "manifest": {"cpu": 0.5, "memory": "512Mi", "min_instances": 0, "idle_timeout": "60s",
                         "keep_paused": "5m (default)"},
            "first_round_ms": summary([s * 1000 for s in rounds[0]], 1),
            "second_round_ms": summary([s * 1000 for s in rounds[1]], 1),
            "all_calls_ms": summary([s * 1000 for s in rounds[0] + rounds[1]], 1),
            "p50_ms": round(percentile(every_call, 50), 1), "p99_ms": round(percentile(every_call, 99), 1),
            "cold_calls": {"first_round": cold[0], "second_round": cold[1]},
            "containers_running_at_end": live,
        }
    finally:
        stack.stop()

"""5. Scale from zero under a burst: 64 concurrent requests (sent by a client in its own
process) to a function at zero instances with concurrency 4 and max_instances 16; time
until every request is answered, and how many instances the platform placed and started.
Each repeat deploys a fresh function name (same image, present on the node) so that none
of it is warm, and deletes it afterwards."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from . import functions, probes
from .stats import summary

BURST = 64
CONCURRENCY = 4
MAX_INSTANCES = 16


def measure(ctx) -> dict:
    stack = ctx.stack
    repeats = 1 if ctx.quick else 3
    directory = functions.write_echo(ctx.fn_dir, "bench-scale", "scale", cpu=0.5, max_instances=MAX_INSTANCES,
                                     concurrency=CONCURRENCY)
    built = functions.build(ctx.docker, directory)
    image, spec = built.image, functions.spec_dict(built)
    samples = []
    for i in range(repeats):
        if i and not ctx.budget.ok(40):
            break
        name = f"bench-scale-{i}"
        fn_spec = {**spec, "name": name, "resources": {**spec["resources"], "cpu": 0.5},
                   "scaling": {**spec["scaling"], "min_instances": 0, "max_instances": MAX_INSTANCES,
                               "concurrency": CONCURRENCY, "idle_timeout": "60s"}}
        stack.deploy(fn_spec, image)
        cfg = {"url": f"{stack.url}/v1/invoke/{name}", "n": BURST, "body": '{"msg": "burst"}',
               "headers": {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}}
        with probes.InstanceWatcher(stack.redis.url, name, every=0.01) as watch:
            t_wall = time.time()
            proc = subprocess.run([sys.executable, "-m", "gantry.bench.burst"], input=json.dumps(cfg).encode(),
                                  capture_output=True, timeout=180)
            if proc.returncode != 0:
                raise RuntimeError(f"burst client failed: {proc.stderr.decode(errors='replace')[-500:]}")
            res = json.loads(proc.stdout)
            time.sleep(0.3)  # instances placed during the burst finish their transitions
        events = probes.docker_events(ctx.docker, t_wall - 1, time.time(),
                                      [f"gantry.node={stack.node_id}", f"gantry.function={name}"])
        statuses = res["statuses"]
        ok = [t for s, t in zip(statuses, res["seconds"]) if s == 200]
        start = res["wall_start"]
        ready_times = watch.all_times("ready")
        samples.append({
            "all_answered_s": max(res["seconds"]),
            "first_answer_s": min(res["seconds"]),
            "ok": len(ok), "failed": len(statuses) - len(ok),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "instances_placed": len(watch.instances()),
            "containers_started": sum(1 for e in events if e.get("Action") == "start"),
            "first_ready_s": (ready_times[0] - start) if ready_times else None,
            "last_ready_s": (ready_times[-1] - start) if ready_times else None,
        })
        stack.delete(name)
        stack.wait_no_containers(name, 90)
    return {
        "function": {"handler": "async JSON echo", "cpu": 0.5, "concurrency": CONCURRENCY,
                     "max_instances": MAX_INSTANCES, "image": "present on the node"},
        "burst": BURST, "client": "aiohttp on uvloop in its own process, one connection per request",
        "repeats": len(samples), "repeats_planned": repeats,
        "all_answered_ms": summary([s["all_answered_s"] * 1000 for s in samples], 1),
        "first_answer_ms": summary([s["first_answer_s"] * 1000 for s in samples], 1),
        "first_instance_ready_ms": summary([s["first_ready_s"] * 1000 for s in samples if s["first_ready_s"]], 1),
        "last_instance_ready_ms": summary([s["last_ready_s"] * 1000 for s in samples if s["last_ready_s"]], 1),
        "instances_placed": summary([s["instances_placed"] for s in samples], 0),
        "containers_started": summary([s["containers_started"] for s in samples], 0),
        "containers_started_note": "Docker start events until 0.3 s after the last answer (placed instances may "
                                   "start later, or be drained before they start)",
        "failed_requests": sum(s["failed"] for s in samples),
        "samples": samples,
    }

"""3. Streaming: time to the first and to the last chunk of a generator that yields every
50 ms (examples/stream with {"count": N, "delay": 0.05}), through the gateway and, as the
floor, from the same container directly; alternating, each on a fresh connection."""
from __future__ import annotations

import json

from gantry_runtime import wire

from . import functions, probes
from .stats import summary

NAME = "bench-stream"


def measure(ctx) -> dict:
    stack = ctx.stack
    repeats = 3 if ctx.quick else 10
    count, delay = 10, 0.05
    body = json.dumps({"count": count, "delay": delay}).encode()
    directory = functions.write_stream(ctx.fn_dir, ctx.repo_root, NAME, min_instances=1)
    result = functions.build(ctx.docker, directory)
    stack.deploy(functions.spec_dict(result), result.image)
    inst = stack.wait(f"a ready {NAME} instance", lambda: stack.ready_instances(NAME), 90)[0]
    host, port = inst["address"].rsplit(":", 1)
    targets = {"gateway": ("127.0.0.1", stack.port, f"/v1/invoke/{NAME}"), "direct": (host, int(port), "/invoke")}
    # The gateway checks the bearer key; the container checks its instance key.
    headers = {"gateway": {"Authorization": f"Bearer {stack.api_key}"},
               "direct": {wire.INSTANCE_KEY: stack.instance_key(inst["id"])}}
    for name, (h, p, path) in targets.items():  # warm-up
        probes.post_stream(h, p, path, body, headers[name])
    runs: dict[str, list[dict]] = {"gateway": [], "direct": []}
    for i in range(repeats):
        if i and not ctx.budget.ok(5):
            break
        for name in (("gateway", "direct") if i % 2 == 0 else ("direct", "gateway")):
            h, p, path = targets[name]
            res = probes.post_stream(h, p, path, body, headers[name])
            if res["status"] != 200 or res["bytes"] == 0:
                raise RuntimeError(f"stream through {name} answered {res}")
            runs[name].append(res)
    out = {"function": {"name": NAME, "source": "examples/stream", "count": count, "delay_s": delay},
           "ideal_last_ms": round((count - 1) * delay * 1000, 1), "repeats": len(runs["gateway"]),
           "repeats_planned": repeats, "paths": {}}
    for name, rs in runs.items():
        out["paths"][name] = {
            "first_chunk_ms": summary([r["first_s"] * 1000 for r in rs], 2),
            "last_chunk_ms": summary([r["last_s"] * 1000 for r in rs], 2),
            "reads": summary([r["reads"] for r in rs], 0),
        }
    g, d = runs["gateway"], runs["direct"]
    out["gateway_over_direct_first_ms"] = summary([a["first_s"] * 1000 - b["first_s"] * 1000 for a, b in zip(g, d)], 2)
    out["gateway_over_direct_last_ms"] = summary([a["last_s"] * 1000 - b["last_s"] * 1000 for a, b in zip(g, d)], 2)
    out["note"] = ("reads: socket reads that returned data; about one per chunk means chunks were relayed as "
                   "they were produced, not buffered")
    stack.delete(NAME)
    return out

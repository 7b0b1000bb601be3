"""4. Deploy.

- cold image build, code-only rebuild, and a hardened container's start until /healthz
  answers (the direct `docker run` floor of a cold start): benchmarks/build_times.py's own
  measure(), reused as is;
- redeploy until traffic has moved: a function with min_instances = 1 serving version N;
  one line of its code changes; time from the start of the build until GET
  /v1/functions/NAME shows active == N+1 and a request answers from the new code.  A
  client keeps calling the function through the gateway the whole time and counts
  failures (there should be none)."""
from __future__ import annotations

import importlib.util
import os
import threading
import time

from . import functions, probes
from .stats import summary


def load_build_times(repo_root: str | None):
    path = os.path.join(repo_root, "benchmarks", "build_times.py") if repo_root else None
    if not path or not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location("gantry_bench_build_times", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def builds(ctx) -> dict:
    mod = load_build_times(ctx.repo_root)
    if mod is None:
        return {"available": False, "why": "benchmarks/build_times.py not found (not a source checkout)"}
    repeats = 1 if ctx.quick else 3
    figures = mod.measure(repeats)
    out = {"source": "benchmarks/build_times.py measure()", "function": "examples/wordcount (one requirement)"}
    for key, s in figures.items():
        out[key + "_ms"] = {"median": round(s["median_s"] * 1000, 1), "min": round(s["min_s"] * 1000, 1),
                            "max": round(s["max_s"] * 1000, 1), "n": s["n"]}
    return out


class Caller(threading.Thread):
    """Calls the function in a loop (fresh connection each) and counts failures."""

    def __init__(self, port: int, name: str, headers: dict):
        super().__init__(daemon=True)
        self.port, self.path, self.headers = port, f"/v1/invoke/{name}", headers
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, body, _ = probes.post("127.0.0.1", self.port, self.path, b"{}", self.headers, timeout=30)
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(f"{status} {body[:120]!r}")
            except OSError as exc:
                self.failed += 1
                self.errors.append(repr(exc))
            self.stop.wait(0.02)


def redeploy(ctx) -> dict:
    stack = ctx.stack
    name = f"bench-rd-{stack.run_id}"
    repeats = 2 if ctx.quick else 3
    directory = functions.write_echo(ctx.fn_dir, name, f"{stack.run_id}-0", cpu=1.0, min_instances=1,
                                     max_instances=2, concurrency=4)
    result = functions.build(ctx.docker, directory)
    version = stack.deploy(functions.spec_dict(result), result.image)
    stack.wait(f"{name} v{version} ready", lambda: stack.ready_instances(name, version), 90)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    samples = []
    caller = Caller(stack.port, name, headers)
    caller.start()
    try:
        for i in range(1, repeats + 1):
            if i > 1 and not ctx.budget.ok(15):
                break
            mark = f"{stack.run_id}-{i}"
            functions.set_mark(directory, mark)
            t0 = time.monotonic()
            built = functions.build(ctx.docker, directory)
            t_built = time.monotonic()
            version = stack.deploy(functions.spec_dict(built), built.image)
            t_deployed = time.monotonic()

            def moved():
                if stack.function(name)["active"] != version:
                    return None
                status, body, _ = probes.post("127.0.0.1", stack.port, f"/v1/invoke/{name}", b"{}", headers)
                return status == 200 and mark.encode() in body or None
            stack.wait(f"traffic on {name} v{version}", moved, 60, every=0.02)
            t_moved = time.monotonic()
            samples.append({"build_s": t_built - t0, "register_s": t_deployed - t_built,
                            "until_moved_s": t_moved - t_deployed, "total_s": t_moved - t0,
                            "layers_built": len(built.built)})
            # let the old version's instance drain before the next round
            stack.wait(f"{name}: one instance left", lambda: stack.function(name)["total"] == 1 or None, 60, every=0.1)
    finally:
        caller.stop.set()
        caller.join(35)
    stack.delete(name)
    ctx.image_prefixes.append(f"gantry/fn-{name}")
    return {
        "function": {"name": name, "min_instances": 1, "change": "one line of handler code (code layer only)"},
        "repeats": len(samples), "repeats_planned": repeats,
        "total_ms": summary([s["total_s"] * 1000 for s in samples], 1),
        "build_ms": summary([s["build_s"] * 1000 for s in samples], 1),
        "register_ms": summary([s["register_s"] * 1000 for s in samples], 1),
        "until_moved_ms": summary([s["until_moved_s"] * 1000 for s in samples], 1),
        "layers_built": summary([s["layers_built"] for s in samples], 0),
        "requests_during": {"ok": caller.ok, "failed": caller.failed, "errors": caller.errors[:5]},
    }

"""One benchmark run: the hot-path microbenchmarks and the builder first (no platform
running), then the platform under test started for the run, the measurements against it,
and, whatever happens, every container it started removed and its processes stopped."""
from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from . import asyncq, cold, coord, density, deploy, goals, machine, scale, stream, tenancy, warm
from . import observability, vllm
from .stack import Stack
from .stats import summary

SCHEMA = 1
LIMITS = {"full": 900.0, "quick": 250.0}          # seconds: stop starting repeats after this
# Ceilings per section (seconds), full / quick: a section starts no new repeat past its own.
CEILINGS = {"hotpath": (60, 15), "builds": (60, 15), "warm": (170, 40), "streaming": (25, 14),
            "cold_start": (120, 40), "redeploy": (60, 22), "scale": (120, 40), "density": (300, 60),
            "tenancy": (60, 20), "async": (150, 45), "coord": (60, 20),
            "observability": (150, 40), "vllm": (600, 0)}
ALIASES = {"tracing": "observability"}            # the section's earlier name, for --only


def repo_root() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    return root if os.path.isfile(os.path.join(root, "BENCHMARKS.md")) else None


class Budget:
    def __init__(self, total: float):
        self.started = time.monotonic()
        self.deadline = self.started + total
        self.section_deadline = self.deadline

    def section(self, ceiling: float) -> None:
        self.section_deadline = min(time.monotonic() + ceiling, self.deadline)

    def ok(self, need: float) -> bool:
        """True when a repeat needing ``need`` seconds still fits this section's ceiling."""
        return time.monotonic() + need <= self.section_deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Context:
    quick: bool
    docker: object
    budget: Budget
    repo_root: str | None
    fn_dir: str
    stack: Stack | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    image_prefixes: list[str] = field(default_factory=list)


def say(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def hotpath(ctx: Context) -> dict:
    path = os.path.join(ctx.repo_root, "benchmarks", "hotpath_report.py") if ctx.repo_root else None
    if not path or not os.path.isfile(path):
        return {"available": False, "why": "benchmarks/hotpath_report.py not found (not a source checkout)"}
    spec = importlib.util.spec_from_file_location("gantry_bench_hotpath_report", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = 3 if ctx.quick else 5
    runs = []
    for i in range(calls):
        if i >= 2 and not ctx.budget.ok(10):
            break
        runs.append(mod.run(ctx.quick))
    figures: dict = {"source": "benchmarks/hotpath_report.py run()", "calls": len(runs),
                     "repeats_per_call": runs[0]["repeats"],
                     "note": "ns per operation; each call's figure is its own median of repeats; shown here: "
                             "median [min-max] over the calls"}
    for group in ("ratelimit", "router", "placement", "ratios"):
        figures[group] = {k: summary([r[group][k] for r in runs], 1) for k in runs[0][group]}
    figures["loop_ns"] = summary([r["loop_ns"] for r in runs], 1)
    figures["placement_quality"] = runs[0]["placement_quality"]
    from ..hotpath import _select
    figures["implementations"] = {name: sorted(_select.twins(name)) for name in ("ratelimit", "router", "placement")}
    return figures


def _git_commit(root: str | None) -> str | None:
    if not root:
        return None
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _git_changed(root: str | None) -> list[str] | None:
    """Tracked files that differ from the commit (the run measured the working tree)."""
    if not root:
        return None
    try:
        out = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=10)
        return [line[3:] for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        return None


def run(quick: bool = False, only: set[str] | None = None) -> dict:
    """Measure; return the results dict (also when a section failed: see ``errors``).  ONLY:
    the names of the sections to run (keys of CEILINGS); None runs them all."""
    import docker

    only = {ALIASES.get(name, name) for name in only} if only else only
    unknown = sorted(set(only or ()) - set(CEILINGS))
    if unknown:
        raise ValueError(f"no section named {', '.join(unknown)} (sections: {', '.join(CEILINGS)})")

    mode = "quick" if quick else "full"
    try:
        docker_client = docker.from_env(timeout=300)
        docker_client.ping()
    except Exception as exc:
        raise RuntimeError(f"cannot reach the Docker engine ({exc}); is dockerd running? "
                           "(scripts/setup.sh starts it)") from None
    root = repo_root()
    work = tempfile.mkdtemp(prefix="gantry-bench-fn-")
    ctx = Context(quick=quick, docker=docker_client, budget=Budget(LIMITS[mode]), repo_root=root, fn_dir=work)
    results: dict = {"schema": SCHEMA, "mode": mode, "only": sorted(only) if only else None,
                     "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "git_commit": _git_commit(root), "git_changed": _git_changed(root), "machine": machine.describe(docker_client),
                     "sections": {}, "errors": {}}
    sections = results["sections"]

    def section(name: str, fn: Callable[[Context], dict], store: Callable[[dict], None] | None = None) -> None:
        if only and name not in only:
            return
        ctx.budget.section(CEILINGS[name][1 if quick else 0])
        say(f"{name} ...")
        t = time.monotonic()
        try:
            value = fn(ctx)
            value["section_s"] = round(time.monotonic() - t, 1)
            (store or (lambda v: sections.__setitem__(name, v)))(value)
            say(f"{name} done in {time.monotonic() - t:.1f}s")
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on and exits non-zero
            results["errors"][name] = f"{type(exc).__name__}: {exc}"[:4000]
            say(f"{name} FAILED: {type(exc).__name__}: {str(exc)[:2000]}")
            traceback.print_exc(file=sys.stderr)

    forced: list[str] = []
    try:
        section("hotpath", hotpath)
        section("builds", deploy.builds, lambda v: sections.setdefault("deploy", {}).__setitem__("builds", v))
        say("starting the platform (own redis-server; scheduler, gateway, worker processes)")
        ctx.stack = Stack.create(docker_client)
        results["node_id"] = ctx.stack.node_id
        results["platform"] = ctx.stack.settings
        ctx.stack.start()
        section("warm", warm.measure)
        section("tenancy", tenancy.measure)
        section("async", asyncq.measure)
        section("coord", coord.measure)
        section("streaming", stream.measure)
        section("cold_start", cold.measure)
        section("redeploy", deploy.redeploy, lambda v: sections.setdefault("deploy", {}).__setitem__("redeploy", v))
        section("scale", scale.measure)
        section("density", density.measure)
        section("observability", observability.measure)   # it starts gateways of its own
        section("vllm", vllm.measure)      # a full run only, with the vLLM image built (gantry images --vllm)
    except Exception as exc:  # noqa: BLE001 - the platform did not start
        results["errors"]["platform"] = f"{type(exc).__name__}: {exc}"[:4000]
        say(f"FAILED: {exc}")
    finally:
        for cleanup in reversed(ctx.cleanups):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001
                forced.append(f"cleanup failed: {exc!r}")
        if ctx.stack is not None:
            forced += ctx.stack.stop()
            left = ctx.stack.containers()
            results["cleanup"] = {"containers_left": len(left), "forced": forced}
            shutil.rmtree(ctx.stack.tmp, ignore_errors=True)
        from .functions import remove_images
        for prefix in ctx.image_prefixes:
            remove_images(docker_client, prefix)
        shutil.rmtree(work, ignore_errors=True)
        docker_client.close()
    results["machine"]["load_average_end"] = machine.load_average()
    results["goals"] = goals.evaluate(sections)
    results["elapsed_s"] = round(ctx.budget.elapsed(), 1)
    return results

"""How fast the runtime starts inside its container (docs/benchmarks.md, "Runtime start-up").

For each image given (a function image: the runtime plus a handler), REPEATS times, the
instance's hardened container (containerspec.container_kwargs, with its CPU quota, on the
function network, with a key) is created, then started, and these are read on dockerd's
clock: the container's ``start`` event, and the times Docker stamped on the runtime's
``start`` (listening) and ``ready`` (handler imported) log lines; from the host, the time of
the first GET /healthz that answered 200 (probed every 2 ms from the start call), and
the time the ready line came out of Docker's log stream, followed from the start as the
worker's log follower does (the ready report, worker.readyreport).  The
images are measured in turn (A B A B ...), so a busy machine weighs on each alike.

Once per image, ``python3 -X importtime -m gantry_runtime`` in the same container spec
gives the heaviest imports (cumulative microseconds, the median of IMPORT_RUNS runs).

Run: PYTHONPATH=platform:runtime .venv/bin/python benchmarks/runtime_start.py \
         [--repeats 10] [--json OUT] [--dir examples/hello] IMAGE [IMAGE ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime

import docker

from gantry.bench.probes import docker_events, event_time
from gantry.manifest import load_manifest
from gantry.worker.containers import ensure_network
from gantry.worker.containerspec import container_kwargs, network_name, published_port
from gantry_runtime.wire import is_ready_line, new_instance_key

IMPORT_RUNS = 3
TOP = 15


def _stamp(raw: str) -> float:
    """Docker's RFC 3339 log timestamp (nanoseconds) as Unix seconds."""
    whole, _, frac = raw.rstrip("Z").partition(".")
    base = datetime.fromisoformat(whole + "+00:00").timestamp()
    return base + (int(frac[:9].ljust(9, "0")) / 1e9 if frac else 0.0)


def _log_times(container) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in container.logs(stdout=True, stderr=False, timestamps=True).decode(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        if not text.startswith("{"):
            continue
        try:
            msg = json.loads(text).get("msg")
        except ValueError:
            continue
        if msg in ("start", "ready") and msg not in out:
            out[msg] = _stamp(stamp)
    return out


def one_start(client, spec, image: str) -> dict:
    kwargs = container_kwargs(spec, image, uuid.uuid4().hex[:8], key=new_instance_key(),
                              network=ensure_network(client, network_name(spec)), labels={"gantry.bench": "1"})
    kwargs.pop("detach", None)
    container = client.containers.create(**kwargs)
    reported: list[float] = []
    try:
        t_call = time.time()
        container.start()
        # as the worker's log follower does: read the stream, note when the ready line arrives
        follower = threading.Thread(target=_follow, args=(container, reported), daemon=True)
        follower.start()
        port = published_port(container)
        healthy = None
        while time.time() - t_call < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        healthy = time.time()
                        break
            except OSError:
                pass
            time.sleep(0.002)
        if healthy is None:
            raise RuntimeError(f"{image}: not healthy within 30 s")
        events = docker_events(client, t_call - 1, time.time() + 0.5, ["gantry.bench=1"])
        started = [event_time(e) for e in events if e.get("Action") == "start" and e.get("id") == container.id]
        logs = _log_times(container)
        follower.join(2)
    finally:
        container.remove(force=True)
    t0 = started[0] if started else None
    ms = lambda t: round((t - t0) * 1000, 1) if (t and t0) else None
    return {"started_to_listening_ms": ms(logs.get("start")), "started_to_imported_ms": ms(logs.get("ready")),
            "started_to_healthz_200_ms": ms(healthy), "started_to_ready_line_read_ms": ms(reported[0] if reported else None)}


def _follow(container, reported: list[float]) -> None:
    """Follow the container's stdout until the runtime's ready line; its arrival time."""
    stream = container.logs(stream=True, follow=True, stdout=True, stderr=False)
    partial = b""
    try:
        for chunk in stream:
            *lines, partial = (partial + chunk).split(b"\n")
            if any(is_ready_line(line.decode(errors="replace")) for line in lines):
                reported.append(time.time())
                return
    finally:
        stream.close()


def import_times(client, spec, image: str) -> dict:
    """The heaviest imports of ``python3 -X importtime -m gantry_runtime`` (median of runs)."""
    kwargs = container_kwargs(spec, image, uuid.uuid4().hex[:8], key=new_instance_key(), network="none",
                              labels={"gantry.bench": "1"})
    for k in ("detach", "ports", "name"):
        kwargs.pop(k, None)
    kwargs["environment"]["GANTRY_PORT"] = "8080"
    kwargs["network_mode"] = kwargs.pop("network")
    runs: list[dict[str, int]] = []
    totals = []
    for _ in range(IMPORT_RUNS):
        out = client.containers.run(**kwargs, command=["sh", "-c", "timeout -s INT 3 python3 -X importtime -m "
                                                             "gantry_runtime 2>&1 >/dev/null | grep '^import time:'"],
                                    remove=True, stdout=True, stderr=False)
        cumulative: dict[str, int] = {}
        top_level = 0
        for line in out.decode().splitlines()[1:]:   # the first is the header
            parts = line.split("|")   # "import time: SELF | CUMULATIVE | NAME", indented by depth
            cum = int(parts[1])
            raw_name = parts[2]
            if not raw_name.startswith("  "):   # top level: its cumulative time is its own tree
                top_level += cum
            cumulative[raw_name.strip()] = cum
        runs.append(cumulative)
        totals.append(top_level)
    names = set().union(*runs)
    med = {n: statistics.median(r.get(n, 0) for r in runs) for n in names}
    top = sorted(med.items(), key=lambda kv: -kv[1])[:TOP]
    return {"total_ms": {"median": round(statistics.median(totals) / 1000, 1), "min": round(min(totals) / 1000, 1),
                         "max": round(max(totals) / 1000, 1), "n": len(totals)},
            "top_cumulative_ms": {n: round(v / 1000, 1) for n, v in top}}


def summary(values: list[float | None]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0}
    return {"median": round(statistics.median(vals), 1), "min": min(vals), "max": max(vals), "n": len(vals),
            "samples": vals}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--dir", default="examples/hello", help="the function directory the images were built from")
    ap.add_argument("--cpu", type=float, default=1.0, help="the CPU quota (the cold-start bench's function has 1.0)")
    ap.add_argument("--json")
    args = ap.parse_args()
    client = docker.from_env(timeout=120)
    spec = load_manifest(args.dir)
    spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, cpu=args.cpu))
    samples: dict[str, list[dict]] = {image: [] for image in args.images}
    for _ in range(args.repeats):
        for image in args.images:
            samples[image].append(one_start(client, spec, image))
    result = {}
    for image in args.images:
        keys = samples[image][0].keys()
        result[image] = {k: summary([s[k] for s in samples[image]]) for k in keys}
        result[image]["import"] = import_times(client, spec, image)
        print(image)
        for k in keys:
            s = result[image][k]
            print(f"  {k:28s} median {s.get('median')} ms  (min {s.get('min')}, max {s.get('max')}, n={s['n']})")
        imp = result[image]["import"]
        print(f"  import (-X importtime, top level) median {imp['total_ms']['median']} ms "
              f"(min {imp['total_ms']['min']}, max {imp['total_ms']['max']})")
        for name, v in list(imp["top_cumulative_ms"].items())[:8]:
            print(f"      {v:8.1f} ms  {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the worker's Docker calls cost per cold start (issue 16 part 4).

    PYTHONPATH=platform:runtime .venv/bin/python benchmarks/cold_docker.py --repeats 7 IMAGE

IMAGE is a function image present on the node (e.g. the bench's gantry/fn-bench-cold:TAG).

1. ``calls``: the worker's own ``containers.start`` as it is, every Docker API request it
   makes timed (method and path), and how many new connections to the Docker socket it
   opened; then GET /healthz every 2 ms until 200 (the instance is ready).
2. ``ways``: the ways to start the same instance (same spec, same network), each timed from
   the worker's first call until its Docker calls return (docker_calls_ms) and until
   /healthz answers (until_healthy_ms), interleaved A B C D A B C D ...:
   - ``create+start``: what the worker did before this change (its own network namespace);
   - ``precreated``: the container was created ahead, the timed part is ``start`` only;
   - ``sandbox``: create and start joining a network namespace kept ready (a running sandbox
     container that holds the namespace and the published port);
   - ``precreated+sandbox``: both: ``start`` only, into the kept-ready namespace.
Medians and ranges in ms; the JSON goes to --json when given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid

import docker
import docker.transport.unixconn as unixconn

sys.path[:0] = [os.path.join(os.path.dirname(__file__), "..", "platform"),
                os.path.join(os.path.dirname(__file__), "..", "runtime")]

from gantry import manifest  # noqa: E402
from gantry.worker import containers  # noqa: E402
from gantry.worker.dockerconn import persistent  # noqa: E402


class Recorder:
    """Times every request the SDK's session sends, and counts socket connects."""

    def __init__(self, client) -> None:
        self.calls: list[tuple[str, float]] = []
        self.connects = 0
        api = client.api
        original = api.request
        recorder = self

        def request(method, url, *args, **kwargs):
            t = time.perf_counter()
            try:
                return original(method, url, *args, **kwargs)
            finally:
                recorder.calls.append((f"{method} {_shape(url)}", (time.perf_counter() - t) * 1000))
        api.request = request
        connect = unixconn.UnixHTTPConnection.connect

        def counting_connect(conn):
            recorder.connects += 1
            return connect(conn)
        unixconn.UnixHTTPConnection.connect = counting_connect

    def take(self) -> tuple[list[tuple[str, float]], int]:
        out = (self.calls, self.connects)
        self.calls, self.connects = [], 0
        return out


def _shape(url: str) -> str:
    path = url.split("/v1.", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    parts = path.split("/")
    if len(parts) > 1 and parts[0] == "containers" and parts[1] not in ("create", "json"):
        parts[1] = "ID"
    return "/" + "/".join(parts)


def healthy(port: int, started: float, limit: float = 60) -> float:
    while time.perf_counter() - started < limit:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return (time.perf_counter() - started) * 1000
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("not healthy in 60 s")


def spec_for(image: str) -> manifest.FunctionSpec:
    return manifest.FunctionSpec.from_dict({"name": "cold-docker", "handler": "main:handle",
                                            "resources": {"cpu": 1.0, "memory": "128Mi"}})


def stats(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {}
    return {"median": round(values[len(values) // 2] if len(values) % 2 else
                            (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2, 1),
            "min": round(values[0], 1), "max": round(values[-1], 1), "n": len(values)}


NODE = "cold-docker-measure"


def measure_calls(client, image: str, repeats: int) -> dict:
    rec = Recorder(client)
    spec = spec_for(image)
    per_call: dict[str, list[float]] = {}
    totals, docker_ms, connects = [], [], []
    containers.start(client, NODE, "127.0.0.1", spec, image, "warmup", 1, 1, 1.0)   # the network exists
    containers.force_remove(client, containers.find(client, NODE, "warmup"))
    rec.take()
    for _ in range(repeats):
        instance = f"cold-docker-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        cid, port, _key = containers.start(client, NODE, "127.0.0.1", spec, image, instance, 1, 1, 1.0)
        docker_ms.append((time.perf_counter() - t) * 1000)
        totals.append(healthy(port, t))
        calls, n = rec.take()
        connects.append(n)
        for name, ms in calls:
            per_call.setdefault(name, []).append(ms)
        client.api.remove_container(cid, force=True)
        rec.take()
    return {"per_call_ms": {k: stats(v) for k, v in per_call.items()},
            "calls_per_start": round(sum(len(v) for v in per_call.values()) / repeats, 1),
            "new_connections_per_start": stats(connects),
            "start_call_ms": stats(docker_ms), "until_healthy_ms": stats(totals)}


def measure_ways(client, image: str, repeats: int) -> dict:
    from gantry.worker import spares

    spec = spec_for(image)
    out: dict[str, list[float]] = {"create+start": [], "precreated": [], "sandbox": [], "precreated+sandbox": []}
    calls: dict[str, list[float]] = {k: [] for k in out}     # the worker's Docker part alone
    for _ in range(repeats):
        for way in out:
            instance = f"cold-docker-{uuid.uuid4().hex[:8]}"
            sandbox = precreated = None
            if "sandbox" in way:
                sandbox, port = spares.make_sandbox(client, NODE, "127.0.0.1", spec, image, instance)
            if way.startswith("precreated"):
                cid, key = spares.create(client, NODE, "127.0.0.1", spec, image, instance, 1, sandbox=sandbox)
                if sandbox is None:      # its own namespace: the port is known once started
                    client.api.remove_container(cid, force=True)
                    cid = client.containers.create(**{**spares.container_kwargs(
                        spec, image, instance, key=key, network=containers.network_id(client, "gantry-fn"),
                        labels={containers.LABEL_NODE: NODE})}).id
                    precreated = None
                else:
                    precreated = (cid, port, key)
                time.sleep(0.5)
            t = time.perf_counter()
            if precreated is None and way == "precreated":
                client.api.start(cid)
                port = containers.port_of(client, client.api.inspect_container(cid))
            else:
                cid, port, _key = containers.start(client, NODE, "127.0.0.1", spec, image, instance, 1, 1, 1.0,
                                                   precreated=precreated, sandbox=sandbox)
            calls[way].append((time.perf_counter() - t) * 1000)
            out[way].append(healthy(port, t))
            spares.remove(client, NODE, instance)
            time.sleep(0.3)
    return {"until_healthy_ms": {k: stats(v) for k, v in out.items()},
            "docker_calls_ms": {k: stats(v) for k, v in calls.items()}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", choices=("calls", "ways"))
    ap.add_argument("--sdk-pools", action="store_true",
                    help="the SDK's own connection pools (one per URL), not the worker's one pool")
    ap.add_argument("--json")
    args = ap.parse_args()
    client = docker.from_env(timeout=300)
    if not args.sdk_pools:
        persistent(client)       # as the worker agent does
    figures = {"pools": "sdk (one per URL)" if args.sdk_pools else "one (worker/dockerconn.py)"}
    try:
        if args.only in (None, "calls"):
            figures["calls"] = measure_calls(client, args.image, args.repeats)
        if args.only in (None, "ways"):
            figures["ways"] = measure_ways(client, args.image, args.repeats)
    finally:
        for c in client.api.containers(all=True, filters={"label": f"{containers.LABEL_NODE}={NODE}"}):
            client.api.remove_container(c["Id"], force=True)
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

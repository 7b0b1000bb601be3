"""Builder and container-start figures for the README (median of N, min and max).

  cold build        a function with a requirements.txt whose deps and code layers do not
                    exist yet (the runtime image is present, pip's download cache may be warm)
  code-only rebuild one line of the handler changed: only the code layer is built
  start until ready create + start of the hardened container until /healthz answers 200

Run: .venv/bin/python benchmarks/build_times.py [--repeats 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid

import docker

from gantry.build import build_function
from gantry.manifest import load_manifest
from gantry.worker.containers import ensure_network
from gantry.worker.containerspec import container_kwargs, network_name, published_port
from gantry_runtime.wire import new_instance_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(samples: list[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples), "n": len(samples)}


def remove_images(client, repo: str) -> None:
    for image in client.images.list(name=repo):
        for tag in image.tags:
            client.images.remove(tag, force=True)


def start_until_ready(client, image: str, directory: str) -> float:
    spec = load_manifest(directory)
    # as the worker starts an instance: on the function network (made before the clock starts), with a key
    kwargs = container_kwargs(spec, image, uuid.uuid4().hex[:8], key=new_instance_key(),
                              network=ensure_network(client, network_name(spec)), labels={"gantry.bench": "1"})
    started = time.monotonic()
    container = client.containers.run(**kwargs)
    try:
        port = None
        while time.monotonic() - started < 60:
            port = port or published_port(container)
            if port:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            return time.monotonic() - started
                except OSError:
                    pass
            time.sleep(0.005)
        raise RuntimeError("container not ready in 60 s")
    finally:
        container.remove(force=True)


def measure(repeats: int) -> dict:
    client = docker.from_env(timeout=300)
    work = tempfile.mkdtemp(prefix="gantry-bench-")
    try:
        directory = os.path.join(work, "bench-wc")
        shutil.copytree(os.path.join(ROOT, "examples", "wordcount"), directory)
        toml = os.path.join(directory, "gantry.toml")
        with open(toml) as f:
            text = f.read().replace('name = "wordcount"', 'name = "bench-wc"')
        with open(toml, "w") as f:
            f.write(text)
        cold, code_only, ready = [], [], []
        for i in range(repeats):
            remove_images(client, "gantry/fn-bench-wc")
            remove_images(client, "gantry/fn-bench-wc-deps")
            t = time.monotonic()
            build_function(client, directory)
            cold.append(time.monotonic() - t)
            with open(os.path.join(directory, "main.py"), "a") as f:
                f.write(f"\n# change {i}\n")
            t = time.monotonic()
            result = build_function(client, directory)
            code_only.append(time.monotonic() - t)
            assert result.built == [result.image], result.built
            ready.append(start_until_ready(client, result.image, directory))
        remove_images(client, "gantry/fn-bench-wc")
        remove_images(client, "gantry/fn-bench-wc-deps")
        return {"cold_build": summary(cold), "code_only_rebuild": summary(code_only),
                "start_until_ready": summary(ready)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        client.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    figures = measure(args.repeats)
    for name, s in figures.items():
        print(f"{name:20s} median {s['median_s']:.2f} s  (min {s['min_s']:.2f}, max {s['max_s']:.2f}, n={s['n']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

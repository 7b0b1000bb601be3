"""The main job: start the platform, deploy every example, invoke each (cold, then warm),
print the results with their latency, and stop the platform leaving no container behind.

Run through `make demo` (which sets the machine up first).  Everything goes through the
`gantry` CLI and the Python SDK (gantry.Client), as a user would.

The demo's platform keeps its state and CLI config in a folder of its own, removed at the
end: the user's `gantry up` data (~/.local/state/gantry), API key and CLI config file
(~/.config/gantry/config.toml) are neither read nor overwritten.
"""
from __future__ import annotations

import os
import shutil
import statistics
import signal
import subprocess
import sys
import tempfile
import time

from gantry import Client
from gantry.sdk import GantryError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GANTRY = os.path.join(os.path.dirname(sys.executable), "gantry")
EXAMPLES = [("hello", '{"name": "demo"}'), ("stream", '{"count": 5}'),
            ("events", '{"count": 3, "delay": 0.05}'),
            ("wordcount", '{"text": "Gantry runs functions. Functions scale to zero."}')]


def wait_healthy(client: Client, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gantry up exited with {proc.returncode}")
        try:
            if client.health(timeout=1)["status"] == "ok":
                return
        except (GantryError, OSError):     # not listening yet (ConnectionFailed), or slow to answer
            time.sleep(0.2)
    sys.exit("gantry up did not become healthy")


def gantry(*args: str, env: dict) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([GANTRY, *args], capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"gantry {' '.join(args)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def _timed(client: Client, name: str, data: str) -> float:
    started = time.monotonic()
    for _ in client.invoke(name, data.encode(), stream=True, content_type="application/json"):
        pass        # to the last byte
    return time.monotonic() - started


def _wait_zero(client: Client, name: str, timeout: float = 60) -> None:
    """Wait until the function runs no instance, so the next call is a cold start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.get_function(name)["total"]:
        time.sleep(0.2)


def main() -> int:
    port = os.environ.get("GANTRY_PORT", "8000")
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GANTRY_URL": url,
           "GANTRY_API_KEY": os.environ.get("GANTRY_API_KEY") or "gk_demo_" + os.urandom(16).hex()}
    env.pop("GANTRY_REDIS_URL", None)      # `gantry up` starts a Redis server of its own
    scratch = tempfile.mkdtemp(prefix="gantry-demo-")
    env["GANTRY_STATE_DIR"] = os.path.join(scratch, "state")   # not the user's functions and key
    env["XDG_CONFIG_HOME"] = os.path.join(scratch, "config")   # nor the user's CLI config file
    node = env.setdefault("GANTRY_NODE_ID", f"demo-{os.getpid()}")
    print(f"==> gantry up (gateway {url})", flush=True)
    up = subprocess.Popen([GANTRY, "up", "--port", port], env=env)
    client = Client(url, env["GANTRY_API_KEY"])
    try:
        wait_healthy(client, up)
        rows = []
        for name, data in EXAMPLES:
            print(f"==> gantry deploy examples/{name}", flush=True)
            gantry("deploy", os.path.join(ROOT, "examples", name), env=env)
            _wait_zero(client, name)
            cold = _timed(client, name, data)                        # timed over HTTP, from zero
            _, out = gantry("invoke", name, "-d", data, env=env)        # as a user would: the CLI
            warm = statistics.median(_timed(client, name, data) for _ in range(5))
            rows.append((name, cold, warm, out.strip()))
        print("\n==> results: request to last byte over HTTP; cold = the first call after the "
              "function scaled to zero (container start included), warm = median of 5")
        for name, cold, warm, out in rows:
            shown = out.replace("\n", " | ")
            shown = shown if len(shown) < 120 else shown[:117] + "..."
            print(f"{name:10s} cold {cold * 1000:7.0f} ms   warm {warm * 1000:6.0f} ms   {shown!s}")
        print("\n==> to keep the platform running: .venv/bin/gantry up (prints the API key on its first start and "
              "keeps it, and what you deploy, across restarts), then, as a user would:")
        print(f"curl -H \"Authorization: Bearer $GANTRY_API_KEY\" -H 'Content-Type: application/json' "
              f"-d '{{\"name\": \"you\"}}' {url}/v1/invoke/hello")
        return 0
    finally:
        print("==> stopping gantry up", flush=True)
        up.send_signal(signal.SIGINT)
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=gantry.managed=1",
                               "--filter", f"label=gantry.node={node}"],
                              capture_output=True, text=True).stdout.split()
        print(f"==> containers left behind: {len(left)}")
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

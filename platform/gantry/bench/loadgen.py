"""HTTP load from wrk (Debian's `wrk`), in its own process: a Lua script sets the POST body
and headers and prints wrk's own summary as one JSON line.  The CPU time wrk used is taken
from the kernel (wait4's rusage), so a report can show wrk was not the bottleneck."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from gantry_runtime import wire

MARK = "BENCHJSON "

LUA = r'''
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
local key = os.getenv("BENCH_INSTANCE_KEY")
if key and key ~= "" then wrk.headers[os.getenv("BENCH_KEY_HEADER")] = key end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
'''


class LoadError(RuntimeError):
    pass


def require_wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        raise LoadError("wrk is not installed (Debian package `wrk`; scripts/setup.sh installs it)")
    return path


def write_script(directory: str) -> str:
    path = os.path.join(directory, "post.lua")
    with open(path, "w") as f:
        f.write(LUA)
    return path


def run_wrk(url: str, script: str, *, connections: int, duration: float, body: str,
            auth: str | None = None, instance_key: str | None = None, timeout_s: float = 10.0) -> dict:
    """One wrk run; returns its summary plus throughput and wrk's CPU use (cores).  AUTH is
    the Authorization header (for the gateway), INSTANCE_KEY the wire.INSTANCE_KEY header (for
    a container called directly)."""
    threads = max(1, min(connections, os.cpu_count() or 1, 2))
    cmd = [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--timeout", f"{timeout_s:g}s", "-s", script, url]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_AUTH": auth or "", "BENCH_INSTANCE_KEY": instance_key or "",
           "BENCH_KEY_HEADER": wire.INSTANCE_KEY}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    wall = time.monotonic() - started
    line = next((ln for ln in out.decode(errors="replace").splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')[-500:]} "
                        f"{out.decode(errors='replace')[-500:]}")
    data = json.loads(line[len(MARK):])
    seconds = data["duration_us"] / 1e6
    errors = sum(data["errors"].values())
    return {
        "requests": data["requests"], "errors": errors, "error_detail": data["errors"],
        "rps": data["requests"] / seconds if seconds else 0.0,
        "p50_ms": data["p50_us"] / 1000, "p90_ms": data["p90_us"] / 1000, "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000, "mean_ms": data["mean_us"] / 1000,
        "wrk_threads": threads,
        "wrk_cpu_cores": (usage.ru_utime + usage.ru_stime) / wall if wall else None,
    }


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process so far (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and its direct children (nginx's master and workers)."""
    total = process_cpu_seconds(pid)
    if total is None:
        return None
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    for child in children:
        total += process_cpu_seconds(child) or 0.0
    return total


def run_wrk_measuring(pid: int | None, url: str, script: str, **wrk) -> dict:
    """``run_wrk`` and, with ``proxy_cpu_cores``, the CPU the process PID (and its children)
    used over the run, in cores (None without a PID)."""
    cpu0 = tree_cpu_seconds(pid) if pid else None
    t0 = time.monotonic()
    run = run_wrk(url, script, **wrk)
    wall = time.monotonic() - t0
    cpu1 = tree_cpu_seconds(pid) if pid else None
    run["proxy_cpu_cores"] = (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None
    return run

"""The machine a run measured: CPU model, cores, memory, kernel, load, tool versions."""
from __future__ import annotations

import os
import platform as _platform
import shutil
import subprocess
import sys


def _first(path: str, prefix: str, sep: str = ":") -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(sep, 1)[1].strip()
    except OSError:
        pass
    return None


def _version(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def describe(docker_client=None) -> dict:
    mem_kb = _first("/proc/meminfo", "MemTotal")
    memory_gib = round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None
    cpu_model = _first("/proc/cpuinfo", "model name") or _platform.processor() or "unknown"
    info = {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib,
        "kernel": _platform.release(),
        "os": _first("/etc/os-release", "PRETTY_NAME=", "=") or _platform.platform(),
        "python": sys.version.split()[0],
        "hostname": _platform.node(),
        "load_average_start": load_average(),
        "wrk": _version(["wrk", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "redis_server": _version(["redis-server", "--version"]),
    }
    info["os"] = info["os"].strip('"')
    if docker_client is not None:
        try:
            info["docker"] = docker_client.version().get("Version")
        except Exception:  # noqa: BLE001 - a description, never a failure
            info["docker"] = None
    return info


def one_line(m: dict) -> str:
    return (f"{m.get('cpu_model')}, {m.get('cores_usable')} cores, {m.get('memory_gib')} GiB, "
            f"{m.get('os')}, kernel {m.get('kernel')}, Docker {m.get('docker')}, Python {m.get('python')}")

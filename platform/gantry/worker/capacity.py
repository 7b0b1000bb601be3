"""What a node offers (CPU in millicores, memory in bytes, detected or given) and what it
really uses now (read from /proc, reported with each heartbeat)."""
from __future__ import annotations

import os

from ..quantities import parse_size

MEMINFO = "/proc/meminfo"
PROC_STAT = "/proc/stat"

# Placement reserves a function's CPU request against cores x this factor; each container is
# still limited to its own `cpu`.  Agent functions mostly wait on remote model APIs, so a
# node's cores are idle most of the time; at 4x, a default function (0.5 CPU) is still
# guaranteed an eighth of a core under full contention and any idle core when there is none.
# Memory is never overcommitted.
DEFAULT_CPU_OVERCOMMIT = 4.0


def detect_cpu_millis() -> int:
    """The CPUs this process may run on (its affinity mask, else os.cpu_count()), in millicores."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, count) * 1000


def detect_memory(meminfo: str = MEMINFO) -> int:
    """MemTotal from /proc/meminfo, in bytes (0 when it cannot be read)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    parts = line.split()
                    factor = 1024 if len(parts) > 2 and parts[2].lower() == "kb" else 1
                    return int(parts[1]) * factor
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _meminfo(meminfo: str) -> dict[str, int]:
    out = {}
    try:
        with open(meminfo) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    factor = 1024 if len(parts) > 2 and parts[2].lower() == "kb" else 1
                    out[parts[0].rstrip(":")] = int(parts[1]) * factor
    except (OSError, ValueError):
        pass
    return out


def memory_in_use(meminfo: str = MEMINFO) -> int:
    """MemTotal - MemAvailable, in bytes (0 when it cannot be read)."""
    info = _meminfo(meminfo)
    return max(0, info.get("MemTotal", 0) - info.get("MemAvailable", info.get("MemTotal", 0)))


class CpuMeter:
    """Millicores busy on the whole node between two readings of /proc/stat."""

    def __init__(self, stat: str = PROC_STAT) -> None:
        self._stat = stat
        self._last = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            with open(self._stat) as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
        return sum(fields[:8]), idle

    def sample(self, cpu_millis: int) -> int:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return 0
        busy = 1.0 - (now[1] - last[1]) / (now[0] - last[0])
        return int(round(max(0.0, min(1.0, busy)) * cpu_millis))


def parse_cpu(value: str) -> int:
    """Millicores from "2" or "1.5" (cores) or "1500m" (millicores)."""
    text = value.strip()
    try:
        millis = int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)
    except ValueError:
        raise ValueError(f"expected cores such as \"2\" or \"1.5\", or millicores such as \"1500m\", "
                         f"got {value!r}") from None
    if millis <= 0:
        raise ValueError(f"expected a CPU capacity above zero, got {value!r}")
    return millis


def parse_memory(value: str) -> int:
    """Bytes from "8Gi", "512Mi" or a plain number of bytes."""
    size = parse_size(value.strip())
    if size <= 0:
        raise ValueError(f"expected a memory capacity above zero, got {value!r}")
    return size

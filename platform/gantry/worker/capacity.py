"""What a node offers: CPU in millicores and memory in bytes, detected or given."""
from __future__ import annotations

import os

from ..quantities import parse_size

MEMINFO = "/proc/meminfo"


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

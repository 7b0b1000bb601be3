"""Parse the human quantities of gantry.toml: sizes ("512Mi", "2G") and durations ("60s")."""
from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?|B)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(value: str | int) -> int:
    """Bytes from an int or a string such as "512Mi", "1.5G", "64k" (k = 1000, Ki = 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as \"512Mi\", got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative size, got {value}")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size such as \"512Mi\" or \"2G\", got {value!r}")
    number, unit = match.groups()
    if unit and unit[0].islower():
        unit = unit[0].upper() + unit[1:]
    return int(float(number) * _SIZE_UNITS[unit])


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number or a string such as "60s", "500ms", "5m", "1h"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as \"30s\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as \"30s\", \"500ms\" or \"5m\", got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    return seconds


def format_size(n: int) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)

"""Quantities and environment settings, read the same way by every Gantry process.

Durations and sizes use gantry.toml's syntax ("30s", "500ms", "5m", "512Mi", "8Gi"); a bare
number is seconds or bytes, so settings written before the units still work. A bad value
raises SettingsError with one line: the variable, what was expected, what was got.

Standard library only: the runtime imports this inside the container, the platform on the host.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?|B)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATIONS_SUCH_AS = 'such as "30s", "500ms" or "5m"'
SIZE_EXAMPLE = 'a size such as "512Mi" or "2G"'

# Beyond these a value is a typo or an attack, never a setting: a larger size overflows the
# 64-bit fields of msgpack, Redis and Docker once multiplied; a longer timeout overflows
# the C timeouts of sockets and threads.  Callers bound their own fields far tighter.
MAX_SIZE = 2**50                  # 1 PiB ("1024Ti")
MAX_DURATION = 365 * 86400.0      # one year, in seconds


def _shown(value: Any) -> str:
    """repr(value), cut short: an error message must not echo a megabyte of hostile input."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_size(value: str | int, most: int = MAX_SIZE) -> int:
    """Bytes from an int or a string such as "512Mi", "1.5G", "64k" (k = 1000, Ki = 1024),
    from 0 to ``most``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as \"512Mi\", got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"expected {SIZE_EXAMPLE}, got {_shown(value)}")
        number, unit = match.groups()
        if unit and unit[0].islower():
            unit = unit[0].upper() + unit[1:]
        scaled = float(number) * _SIZE_UNITS[unit]      # inf for a string of 400 digits
        size = int(scaled) if scaled <= most else most + 1
    if not 0 <= size <= most:
        raise ValueError(f"expected a size from 0 to {format_size(most)}, got {_shown(value)}")
    return size


def parse_duration(value: str | int | float, most: float = MAX_DURATION) -> float:
    """Seconds from a number or a string such as "60s", "500ms", "5m", "1h", from 0 to ``most``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as \"30s\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(min(value, most + 1))        # float(10**400) would overflow
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration {_DURATIONS_SUCH_AS}, got {_shown(value)}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not 0 <= seconds <= most:            # also refuses NaN and infinities
        longest = f"{most / 86400:g} days" if most >= 86400 else f"{most:g}s"
        raise ValueError(f"expected a duration from 0 to {longest}, got {_shown(value)}")
    return seconds


def format_size(n: int) -> str:
    """The shortest exact binary form: 536870912 -> "512Mi"."""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


class SettingsError(ValueError):
    """A bad setting; str() is one line that names the variable."""


class Env:
    """Typed reads of environment variables. Each returns None when the variable is unset or
    blank, so a settings class keeps its own defaults (see ``given``)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env

    def text(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None

    def _read(self, name: str, convert: Callable[[str], T], ok: Callable[[T], bool],
              expected: str) -> T | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = convert(raw)
        except ValueError:
            pass
        else:
            if ok(value):
                return value
        raise SettingsError(f"{name}: expected {expected}, got {raw!r}")

    def integer(self, name: str, *, lo: int, hi: int) -> int | None:
        return self._read(name, int, lambda v: lo <= v <= hi, f"a whole number from {lo} to {hi}")

    def number(self, name: str, *, what: str = "a number", lo: float = 0.0) -> float | None:
        return self._read(name, float, lambda v: lo <= v < math.inf, f"{what} >= {lo:g}")

    def duration(self, name: str, *, allow_zero: bool = False) -> float | None:
        bound = "" if allow_zero else " above zero"
        return self._read(name, parse_duration, lambda v: allow_zero or v > 0,
                          f"a duration{bound} {_DURATIONS_SUCH_AS}")

    def size(self, name: str, *, lo: int = 1, hi: int | None = None) -> int | None:
        bounds = f"of at least {format_size(lo)}" if hi is None else f"from {format_size(lo)} to {format_size(hi)}"
        return self._read(name, parse_size, lambda v: lo <= v and (hi is None or v <= hi),
                          f"{SIZE_EXAMPLE} {bounds}")

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        return self._read(name, str.lower, choices.__contains__, f"one of {', '.join(choices)}")

    def parsed(self, name: str, parse: Callable[[str], T]) -> T | None:
        """A value of a kind only the caller knows (CPU millicores ...). ``parse`` raises
        ValueError("expected ..., got ..."); the variable's name is put in front."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None


def given(values: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values that were set, then the overrides (flags) that were: None means "not given"."""
    out = {k: v for k, v in values.items() if v is not None}
    out.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return out

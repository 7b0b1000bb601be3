"""Function log lines as the API filters them and people read them: pure functions, no I/O.

A log entry is what the worker shipped to keys.function_logs(name): the stream id (its
milliseconds are when the line reached Redis), ``instance`` and ``line``.  A line the
runtime wrote is one JSON object (gantry_runtime.logs: ``ts``, ``level``, ``msg``, ``function``,
``logger`` and any ``extra=`` fields); anything else (a bare ``print``) is plain text, taken
as level ``info``.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Mapping

LEVELS = ("debug", "info", "warning", "error", "critical")
_RANK = {name: i for i, name in enumerate(LEVELS)}
_ALIASES = {"warn": "warning", "fatal": "critical", "err": "error"}
PLAIN_LEVEL = "info"                     # a line that is not a JSON object
# the fields every runtime line has: shown in their own columns (or not at all), not as extras
_SHOWN = frozenset(("ts", "level", "msg", "function", "logger", "traceback"))

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", re.ASCII)
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class LogQueryError(ValueError):
    """A filter that cannot be understood; str() names the field and what it expects."""


def level_name(raw: str) -> str:
    """A level as given (any case, ``warn`` for warning) to one of LEVELS; LogQueryError else."""
    name = raw.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in _RANK:
        raise LogQueryError(f"level: expected one of {', '.join(LEVELS)}, got {raw[:30]!r}")
    return name


def parse_since(raw: str, now: float) -> float:
    """Epoch seconds from a --since value: a duration back from NOW (``90s``, ``10m``,
    ``1h30m``, ``2d``), an ISO 8601 time (no zone: UTC) or epoch seconds."""
    text = raw.strip()
    if not text:
        raise LogQueryError("since: empty")
    if _DURATION.match(text) and "".join(m.group(0) for m in _DURATION.finditer(text)) == text:
        return now - sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
    try:
        value = float(text)
        if value >= 0 and value < 1e11:  # whole epoch seconds (an ISO year never parses as float)
            return value
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LogQueryError(f"since: expected a duration (10m, 2h, 1d), an ISO 8601 time or epoch seconds, "
                            f"got {text[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def stream_ms(entry_id: str) -> int:
    """The milliseconds part of a stream id."""
    return int(entry_id.partition("-")[0])


def structured(line: str) -> dict[str, Any] | None:
    """The line's JSON object, or None for plain text."""
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def entry_level(fields: dict[str, Any] | None) -> str:
    if fields is None:
        return PLAIN_LEVEL
    raw = fields.get("level")
    name = _ALIASES.get(str(raw).lower(), str(raw).lower()) if raw is not None else PLAIN_LEVEL
    return name if name in _RANK else PLAIN_LEVEL


def short_instance(instance: str) -> str:
    """An instance id (``NAME-<12 hex>``) as shown: the first 8 of its random part."""
    return instance.rpartition("-")[2][:8] or instance


def instance_matches(instance: str, wanted: str) -> bool:
    """Whether WANTED names INSTANCE: its whole id, a prefix of it, or of its random part
    (the short id the human lines show)."""
    return instance.startswith(wanted) or instance.rpartition("-")[2].startswith(wanted)


def matches(entry: Mapping[str, str], instance: str | None, min_level: str | None) -> bool:
    """Whether a log entry passes the filters (None: no filter)."""
    if instance and not instance_matches(entry.get("instance", ""), instance):
        return False
    if min_level and _RANK[entry_level(structured(entry.get("line", "")))] < _RANK[min_level]:
        return False
    return True


def _compact(value: Any) -> str:
    """A field's value in key=value: compact JSON, a string bare unless it needs quotes."""
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return json.dumps(value, ensure_ascii=False) if (not value or any(c in value for c in ' ="\n')) else value


def format_entry(entry: Mapping[str, str]) -> str:
    """One entry as a person reads it: UTC time, level, short instance id, message, then the
    line's other fields as key=value (a traceback on the lines after)."""
    line = entry.get("line", "")
    fields = structured(line)
    when = None
    if fields is not None and isinstance(fields.get("ts"), str):
        try:
            when = datetime.fromisoformat(fields["ts"].replace("Z", "+00:00"))
        except ValueError:
            when = None
    if when is None:
        when = datetime.fromtimestamp(stream_ms(entry.get("id", "0")) / 1000, timezone.utc)
    stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    head = f"{stamp} {entry_level(fields).upper():<8} {short_instance(entry.get('instance', '')):<8}"
    if fields is None:
        return f"{head} {line}"
    extras = " ".join(f"{k}={_compact(v)}" for k, v in fields.items() if k not in _SHOWN)
    text = f"{head} {fields.get('msg', '')}" + (f"  {extras}" if extras else "")
    if fields.get("traceback"):
        text += "\n" + "\n".join("    " + t for t in str(fields["traceback"]).splitlines())
    return text

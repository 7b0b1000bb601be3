"""The human quantities of gantry.toml: sizes ("512Mi", "2G") and durations ("60s").

They are parsed in gantry_runtime.config, which the runtime shares; this name stays for the
platform's callers."""
from __future__ import annotations

from gantry_runtime.config import format_size, parse_duration, parse_size

__all__ = ["format_size", "parse_duration", "parse_size"]

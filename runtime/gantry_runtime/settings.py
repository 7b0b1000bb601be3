"""Runtime configuration, read once from the environment into a frozen dataclass."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Mapping

_HANDLER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_LEVELS = ("debug", "info", "warning", "error", "critical")


class SettingsError(ValueError):
    """A bad environment value; ``__main__`` prints it and exits with code 2."""


@dataclass(frozen=True)
class Settings:
    handler: str                     # "module:callable" (the callable may be dotted: "mod:obj.method")
    function: str = ""               # the function's name, for logs and /healthz
    code_dir: str = "/app"           # put first on sys.path before importing the handler
    host: str = "0.0.0.0"
    port: int = 8080
    concurrency: int = 4             # max in-flight invocations; also the handler thread-pool size
    timeout: float = 30.0            # seconds per invocation (X-Gantry-Timeout may only lower it)
    drain_grace: float = 25.0        # seconds in-flight work may run on after SIGTERM
    max_body: int = 6 * 1024 * 1024  # request bytes; more -> 413
    log_level: str = "info"

    @property
    def module(self) -> str:
        return self.handler.partition(":")[0]

    @property
    def attr(self) -> str:
        return self.handler.partition(":")[2]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        handler = env.get("GANTRY_HANDLER", "").strip()
        if not handler:
            raise SettingsError("GANTRY_HANDLER is required (form 'module:callable', e.g. 'main:handle')")
        if not _HANDLER_RE.match(handler):
            raise SettingsError(f"GANTRY_HANDLER must look like 'module:callable', got {handler!r}")
        level = (env.get("GANTRY_LOG_LEVEL") or env.get("LOG_LEVEL") or "info").strip().lower()
        if level not in _LEVELS:
            raise SettingsError(f"GANTRY_LOG_LEVEL must be one of {', '.join(_LEVELS)}, got {level!r}")
        return cls(
            handler=handler,
            function=env.get("GANTRY_FUNCTION", "").strip() or handler.partition(":")[0],
            code_dir=env.get("GANTRY_CODE_DIR", "").strip() or "/app",
            host=env.get("GANTRY_HOST", "").strip() or "0.0.0.0",
            port=_int(env, "GANTRY_PORT", 8080, lo=1, hi=65535),
            concurrency=_int(env, "GANTRY_CONCURRENCY", 4, lo=1, hi=10_000),
            timeout=_seconds(env, "GANTRY_TIMEOUT", 30.0),
            drain_grace=_seconds(env, "GANTRY_DRAIN_GRACE", 25.0, allow_zero=True),
            max_body=_int(env, "GANTRY_MAX_BODY", 6 * 1024 * 1024, lo=1, hi=2**40),
            log_level=level,
        )


def _int(env: Mapping[str, str], name: str, default: int, *, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    """Seconds as a number; a trailing 's' ("30s") is accepted, as in gantry.toml."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw[:-1] if raw.endswith("s") else raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise SettingsError(f"{name} must be a finite number of seconds {bound}, got {raw!r}")
    return value

"""Runtime configuration, read once from the environment into a frozen dataclass."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .config import Env, SettingsError, given
from .wire import HANDLER_EXPECTED, INSTANCE_KEY_ENV, parse_handler

__all__ = ["Settings", "SettingsError"]

_LEVELS = ("debug", "info", "warning", "error", "critical")


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
    # The instance's secret (wire.INSTANCE_KEY_ENV): /invoke answers only requests carrying it.
    # Empty: /invoke is open to anyone who reaches the port (running the runtime by hand);
    # the platform never starts a container without one.
    instance_key: str = field(default="", repr=False)

    @property
    def module(self) -> str:
        return parse_handler(self.handler).module

    @property
    def attr(self) -> str:
        return parse_handler(self.handler).attr

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """GANTRY_HANDLER (required), GANTRY_FUNCTION, GANTRY_CODE_DIR, GANTRY_HOST, GANTRY_PORT,
        GANTRY_CONCURRENCY, GANTRY_TIMEOUT and GANTRY_DRAIN_GRACE ("30s", or seconds),
        GANTRY_MAX_BODY ("6Mi", or bytes), GANTRY_LOG_LEVEL (or LOG_LEVEL), GANTRY_INSTANCE_KEY."""
        e = Env(env)
        handler = e.text("GANTRY_HANDLER")
        if handler is None:
            raise SettingsError(f"GANTRY_HANDLER is required: expected {HANDLER_EXPECTED}")
        try:
            module = parse_handler(handler).module
        except ValueError as exc:
            raise SettingsError(f"GANTRY_HANDLER: {exc}") from None
        return cls(**given({
            "handler": handler,
            "function": e.text("GANTRY_FUNCTION") or module,
            "code_dir": e.text("GANTRY_CODE_DIR"),
            "host": e.text("GANTRY_HOST"),
            "port": e.integer("GANTRY_PORT", lo=1, hi=65535),
            "concurrency": e.integer("GANTRY_CONCURRENCY", lo=1, hi=10_000),
            "timeout": e.duration("GANTRY_TIMEOUT"),
            "drain_grace": e.duration("GANTRY_DRAIN_GRACE", allow_zero=True),
            "max_body": e.size("GANTRY_MAX_BODY", lo=1, hi=2**40),
            "log_level": e.choice("GANTRY_LOG_LEVEL", _LEVELS) or e.choice("LOG_LEVEL", _LEVELS),
            "instance_key": e.text(INSTANCE_KEY_ENV),
        }, overrides))

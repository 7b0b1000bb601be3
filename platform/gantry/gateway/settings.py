"""The gateway's configuration: a frozen dataclass built from the environment or passed in."""
from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Mapping


class SettingsError(ValueError):
    """A bad environment value (names the variable and what was expected)."""


def _random_id() -> str:
    return "gw-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class GatewaySettings:
    redis_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    gateway_id: str = field(default_factory=_random_id)
    max_body: int = 6 * 1024 * 1024        # request body bytes; more -> 413
    cold_start_timeout: float = 30.0       # seconds a request may wait for a free instance slot
    load_report_interval: float = 0.5      # seconds between load reports to fn:NAME:load
    cache_refresh_interval: float = 1.0    # seconds between full cache refreshes (pub/sub is the fast path)
    admin_key_hash: str | None = None      # sha256 hex; None: read keys.ADMIN_KEY_HASH from Redis
    upstream_timeout_margin: float = 5.0   # added to the function's timeout before the gateway gives up (504)
    max_tries: int = 3                     # instances tried per request (503 draining/at_capacity, refused)
    rate_limit: float = 1000.0             # requests/s per API key (0: no limit); more -> 429
    rate_burst: float = 2000.0             # requests a key may send at once

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "GatewaySettings":
        """GANTRY_REDIS_URL, GANTRY_GATEWAY_HOST, GANTRY_GATEWAY_PORT, GANTRY_GATEWAY_ID,
        GANTRY_MAX_BODY, GANTRY_COLD_START_TIMEOUT, GANTRY_ADMIN_KEY_HASH; keyword
        arguments (flags) win over the environment."""
        env = os.environ if env is None else env
        values: dict = {"redis_url": env.get("GANTRY_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"}
        if env.get("GANTRY_GATEWAY_HOST", "").strip():
            values["host"] = env["GANTRY_GATEWAY_HOST"].strip()
        if env.get("GANTRY_GATEWAY_PORT", "").strip():
            values["port"] = _int(env, "GANTRY_GATEWAY_PORT", lo=0, hi=65535)
        if env.get("GANTRY_GATEWAY_ID", "").strip():
            values["gateway_id"] = env["GANTRY_GATEWAY_ID"].strip()
        if env.get("GANTRY_MAX_BODY", "").strip():
            values["max_body"] = _int(env, "GANTRY_MAX_BODY", lo=1, hi=2**40)
        if env.get("GANTRY_COLD_START_TIMEOUT", "").strip():
            values["cold_start_timeout"] = _seconds(env, "GANTRY_COLD_START_TIMEOUT")
        for var, name in (("GANTRY_RATE_LIMIT", "rate_limit"), ("GANTRY_RATE_BURST", "rate_burst")):
            if env.get(var, "").strip():
                try:
                    values[name] = float(env[var])
                except ValueError:
                    raise SettingsError(f"{var}: expected a number of requests per second, got {env[var]!r}") from None
        if env.get("GANTRY_ADMIN_KEY_HASH", "").strip():
            values["admin_key_hash"] = env["GANTRY_ADMIN_KEY_HASH"].strip().lower()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _int(env: Mapping[str, str], name: str, *, lo: int, hi: int) -> int:
    raw = env[name].strip()
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str) -> float:
    raw = env[name].strip()
    try:
        value = float(raw[:-1] if raw.endswith("s") else raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a finite number of seconds > 0, got {raw!r}")
    return value

"""Scheduler settings: a frozen dataclass, built from the environment or passed in."""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerSettings:
    holder_id: str                  # this replica's name in the leader lease
    interval: float = 0.25          # seconds between full reconcile passes
    lease_ms: int = 3000            # leader lease; renewed every lease/3
    load_fresh: float = 5.0         # gateway load reports older than this are ignored
    start_timeout: float = 60.0     # a pending instance not started by then is failed
    node_grace: float = 30.0        # a dead node is forgotten this long after it was seen dead
    unhealthy_timeout: float = 30.0  # an instance unhealthy this long is drained and replaced

    def __post_init__(self) -> None:
        if not self.holder_id:
            raise ValueError("holder_id must not be empty")
        for name in ("interval", "load_fresh", "start_timeout", "node_grace", "unhealthy_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.lease_ms < 3 * self.interval * 1000:
            raise ValueError("lease_ms must be at least three intervals")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "SchedulerSettings":
        """GANTRY_SCHEDULER_ID (default host-pid-random), GANTRY_SCHEDULER_INTERVAL,
        GANTRY_SCHEDULER_LEASE_MS, GANTRY_SCHEDULER_LOAD_FRESH, GANTRY_SCHEDULER_START_TIMEOUT,
        GANTRY_SCHEDULER_NODE_GRACE, GANTRY_SCHEDULER_UNHEALTHY_TIMEOUT; keyword overrides (flags) win."""
        env = os.environ if environ is None else environ
        values: dict = {
            "holder_id": env.get("GANTRY_SCHEDULER_ID")
            or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        }
        for field, var, kind in (("interval", "INTERVAL", float), ("lease_ms", "LEASE_MS", int),
                                 ("load_fresh", "LOAD_FRESH", float),
                                 ("start_timeout", "START_TIMEOUT", float),
                                 ("node_grace", "NODE_GRACE", float),
                                 ("unhealthy_timeout", "UNHEALTHY_TIMEOUT", float)):
            raw = env.get(f"GANTRY_SCHEDULER_{var}")
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise ValueError(f"GANTRY_SCHEDULER_{var}: expected {kind.__name__}, got {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

"""Scheduler settings: a frozen dataclass, built from the environment or passed in."""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Mapping

from gantry_runtime.config import Env, given


@dataclass(frozen=True)
class SchedulerSettings:
    holder_id: str                  # this replica's name in the leader lease
    interval: float = 0.25          # seconds between full reconcile passes
    lease_ms: int = 3000            # leader lease; renewed every lease/3
    load_fresh: float = 5.0         # gateway load reports older than this are ignored
    start_timeout: float = 60.0     # a pending instance not started by then is failed
    # A node whose heartbeat stopped is *suspect* for node_dead_after: its instances keep their
    # records (gateways keep routing to them, a restarted worker adopts them), nothing is
    # placed on it.  Longer than a Redis blip or a worker restart; then it is dead: its
    # instances are reaped and replaced elsewhere.
    node_dead_after: float = 60.0
    node_grace: float = 30.0        # a dead node is forgotten this long after it was declared dead
    unhealthy_timeout: float = 30.0  # an instance unhealthy this long is drained and replaced
    accrue_interval: float = 15.0   # seconds between the leader's accruals of reserved resource-seconds
    # [[schedules]]: a tick missed while the platform was down fires once if at most this old
    # (0: never catch up); gantry.scheduler.schedules has the whole policy
    schedule_catchup: float = 3600.0
    # how long an async invocation's idempotency key is remembered: a schedule's tick is
    # submitted again under its key (never twice) while that holds (the gateway's setting)
    async_retention: float = 86400.0

    def __post_init__(self) -> None:
        if not self.holder_id:
            raise ValueError("holder_id must not be empty")
        for name in _DURATIONS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.lease_ms < 3 * self.interval * 1000:
            raise ValueError(f"lease_ms (GANTRY_SCHEDULER_LEASE_MS) must be at least three intervals "
                             f"({3 * self.interval * 1000:g}), got {self.lease_ms}")
        if self.schedule_catchup < 0:
            raise ValueError("schedule_catchup must not be negative")
        if self.async_retention <= 0:
            raise ValueError("async_retention must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "SchedulerSettings":
        """GANTRY_SCHEDULER_ID (default host-pid-random), GANTRY_SCHEDULER_LEASE_MS (whole
        milliseconds), and as durations ("250ms", "30s", or seconds) GANTRY_SCHEDULER_INTERVAL,
        GANTRY_SCHEDULER_LOAD_FRESH, GANTRY_SCHEDULER_START_TIMEOUT, GANTRY_SCHEDULER_NODE_DEAD_AFTER,
        GANTRY_SCHEDULER_NODE_GRACE, GANTRY_SCHEDULER_UNHEALTHY_TIMEOUT, GANTRY_SCHEDULER_ACCRUE_INTERVAL,
        GANTRY_SCHEDULE_CATCHUP (may be 0) and GANTRY_IDEMPOTENCY_TTL; keyword overrides (flags) win."""
        e = Env(environ)
        return cls(**given({
            "holder_id": e.text("GANTRY_SCHEDULER_ID")
            or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            "lease_ms": e.integer("GANTRY_SCHEDULER_LEASE_MS", lo=1, hi=2**31),
            **{field: e.duration(f"GANTRY_SCHEDULER_{field.upper()}") for field in _DURATIONS},
            "schedule_catchup": e.duration("GANTRY_SCHEDULE_CATCHUP", allow_zero=True),
            "async_retention": e.duration("GANTRY_IDEMPOTENCY_TTL"),
        }, overrides))


_DURATIONS = ("interval", "load_fresh", "start_timeout", "node_dead_after", "node_grace", "unhealthy_timeout",
              "accrue_interval")

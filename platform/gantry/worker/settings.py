"""The worker agent's settings: a frozen dataclass built from the environment or flags."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping

from .capacity import parse_cpu, parse_memory


@dataclass(frozen=True)
class WorkerSettings:
    node_id: str
    host: str = "127.0.0.1"           # where instances' ports are published and the gateway dials
    cpu_millis: int | None = None     # None: detected (CPUs this process may use)
    memory: int | None = None         # bytes; None: MemTotal from /proc/meminfo
    heartbeat_interval: float = 1.0   # seconds between refreshes of node_alive
    heartbeat_ttl: float = 5.0        # node_alive's TTL: the node is dead this long after a stall
    health_interval: float = 0.5      # seconds between health passes over the node's instances
    drain_grace: float = 10.0         # seconds a stopping instance may finish in-flight work
    orphan_interval: float = 5.0      # seconds between sweeps for containers no record owns
    health_timeout: float = 1.0       # one GET /healthz
    start_timeout: float = 120.0      # starting longer than this without a good health check: failed
    command_block: float = 0.2        # BRPOP timeout of the run loop (commands still arrive at once)
    log_maxlen: int = 1000            # approximate cap of each function's log stream
    docker_threads: int = 16          # threads for blocking Docker calls (a stop waits out a drain)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "WorkerSettings":
        """GANTRY_NODE_ID (default: the hostname), GANTRY_NODE_HOST, GANTRY_NODE_CPU (cores or
        "1500m"), GANTRY_NODE_MEMORY ("8Gi" or bytes), GANTRY_HEARTBEAT_INTERVAL,
        GANTRY_HEARTBEAT_TTL, GANTRY_HEALTH_INTERVAL, GANTRY_DRAIN_GRACE, GANTRY_ORPHAN_INTERVAL
        (seconds); keyword overrides (flags) win over the environment."""
        env = os.environ if env is None else env
        values: dict = {"node_id": env.get("GANTRY_NODE_ID", "").strip() or socket.gethostname()}
        if env.get("GANTRY_NODE_HOST", "").strip():
            values["host"] = env["GANTRY_NODE_HOST"].strip()
        if env.get("GANTRY_NODE_CPU", "").strip():
            values["cpu_millis"] = parse_cpu(env["GANTRY_NODE_CPU"])
        if env.get("GANTRY_NODE_MEMORY", "").strip():
            values["memory"] = parse_memory(env["GANTRY_NODE_MEMORY"])
        for name, field in (("GANTRY_HEARTBEAT_INTERVAL", "heartbeat_interval"),
                            ("GANTRY_HEARTBEAT_TTL", "heartbeat_ttl"),
                            ("GANTRY_HEALTH_INTERVAL", "health_interval"),
                            ("GANTRY_DRAIN_GRACE", "drain_grace"),
                            ("GANTRY_ORPHAN_INTERVAL", "orphan_interval")):
            raw = env.get(name, "").strip()
            if raw:
                try:
                    seconds = float(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
                if seconds < 0:
                    raise ValueError(f"{name} must not be negative, got {raw!r}")
                values[field] = seconds
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.heartbeat_ttl <= settings.heartbeat_interval:
            raise ValueError("the heartbeat TTL must be longer than the heartbeat interval "
                             f"({settings.heartbeat_ttl:g}s <= {settings.heartbeat_interval:g}s)")
        return settings

"""The worker agent's settings: a frozen dataclass built from the environment or flags."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Mapping

from gantry_runtime.config import Env, SettingsError, given

from ..manifest import TENANT_RE
from .capacity import DEFAULT_CPU_OVERCOMMIT, parse_cpu, parse_memory
from .secretfiles import DEFAULT_DIR as DEFAULT_SECRETS_DIR


@dataclass(frozen=True)
class WorkerSettings:
    node_id: str
    host: str = "127.0.0.1"           # where instances' ports are published and the gateway dials
    cpu_millis: int | None = None     # None: detected (CPUs this process may use)
    cpu_overcommit: float = DEFAULT_CPU_OVERCOMMIT   # placement may reserve cpu x this (capacity.py says why)
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
    secrets_dir: str = DEFAULT_SECRETS_DIR   # on a tmpfs: instances' secret files (worker.secretfiles)
    node_tenant: str = ""             # the tenant this node is labelled for ("": any tenant's, none node-isolated)
    gpu_node_cpu_work: bool = False   # a node with GPUs takes CPU-only instances too (docs/gpus.md)
    fake_gpus: str = ""               # tests only: "NAME:MEMORY,..." GPUs reported instead of NVML's
    precreate: bool = True            # keep a container made ahead per function likely to start (worker/spares.py)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "WorkerSettings":
        """GANTRY_NODE_ID (default: the hostname), GANTRY_NODE_HOST, GANTRY_NODE_CPU (cores or
        "1500m"), GANTRY_NODE_MEMORY ("8Gi" or bytes), GANTRY_HEARTBEAT_INTERVAL,
        GANTRY_CPU_OVERCOMMIT (at least 1, default 4), GANTRY_SECRETS_DIR, GANTRY_NODE_TENANT (a tenant id: the
        node runs that tenant's instances only), GANTRY_LOG_MAXLEN (lines kept per function, about),
        GANTRY_HEARTBEAT_TTL, GANTRY_HEALTH_INTERVAL, GANTRY_DRAIN_GRACE, GANTRY_ORPHAN_INTERVAL
        ("30s", "500ms", or seconds), GANTRY_GPU_NODE_CPU_WORK (1/0), GANTRY_PRECREATE (1/0: containers
        made ahead of need), GANTRY_FAKE_GPUS (tests only);
        keyword overrides (flags) win over the environment."""
        e = Env(env)
        settings = cls(**given({
            "node_id": e.text("GANTRY_NODE_ID") or socket.gethostname(),
            "host": e.text("GANTRY_NODE_HOST"),
            "cpu_millis": e.parsed("GANTRY_NODE_CPU", parse_cpu),
            "memory": e.parsed("GANTRY_NODE_MEMORY", parse_memory),
            "cpu_overcommit": e.number("GANTRY_CPU_OVERCOMMIT", lo=1.0),
            "secrets_dir": e.text("GANTRY_SECRETS_DIR"),
            "node_tenant": _tenant(e.text("GANTRY_NODE_TENANT")),
            "log_maxlen": e.integer("GANTRY_LOG_MAXLEN", lo=10, hi=10_000_000),
            "gpu_node_cpu_work": _flag(e.choice("GANTRY_GPU_NODE_CPU_WORK", ("0", "1"))),
            "fake_gpus": _fake_gpus(e.text("GANTRY_FAKE_GPUS")),
            "precreate": _flag(e.choice("GANTRY_PRECREATE", ("0", "1"))),
            **{field: e.duration(name, allow_zero=True) for name, field in _DURATIONS},
        }, overrides))
        if settings.heartbeat_ttl <= settings.heartbeat_interval:
            raise SettingsError("GANTRY_HEARTBEAT_TTL: expected a duration longer than the heartbeat "
                                f"interval ({settings.heartbeat_interval:g}s), got {settings.heartbeat_ttl:g}s")
        return settings


def _flag(value: str | None) -> bool | None:
    return None if value is None else value == "1"


def _fake_gpus(value: str | None) -> str | None:
    if value:
        from .fakenvml import from_setting
        try:
            from_setting(value)
        except ValueError as exc:
            raise SettingsError(f"GANTRY_FAKE_GPUS: {exc}") from None
    return value


def _tenant(value: str | None) -> str | None:
    if value and not TENANT_RE.match(value):
        raise SettingsError(f"GANTRY_NODE_TENANT: expected a tenant id ([a-z][a-z0-9-]*), got {value!r}")
    return value


_DURATIONS = (("GANTRY_HEARTBEAT_INTERVAL", "heartbeat_interval"), ("GANTRY_HEARTBEAT_TTL", "heartbeat_ttl"),
              ("GANTRY_HEALTH_INTERVAL", "health_interval"), ("GANTRY_DRAIN_GRACE", "drain_grace"),
              ("GANTRY_ORPHAN_INTERVAL", "orphan_interval"))

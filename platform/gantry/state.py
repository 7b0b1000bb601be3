"""The control plane's shared records, the instance state machine, and how records are
encoded in Redis (keys in gantry.keys; every read and write through gantry.store).

Records are HASHes of plain-string fields so that one writer can change one field without a
read-modify-write.  Who writes what:

- function, function_version:  the gateway's admin API (deploy, delete, scale); the
  scheduler moves ``active`` to ``latest`` once the new version is ready.
- instance:  the scheduler creates it (state PENDING, with node, cpu, memory, epoch); the
  worker on that node sets host, port, key and state as the container starts, turns healthy or
  unhealthy, pauses, resumes and stops; the scheduler sets DRAINING, PAUSING (with
  ``paused_at``) and RESUMING, and deletes records it has reaped.
- node:  the worker registers it and refreshes node_alive (TTL) as its heartbeat.
- function_load:  each gateway replica reports its in-flight and waiting requests.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

import msgpack

from .manifest import FunctionSpec

class InstanceState(StrEnum):
    """Where an instance is in its life.  Only READY instances of the function's active
    version take traffic.  The values are what Redis stores in the record's ``state``."""
    PENDING = "pending"        # placed by the scheduler; the worker has not started it yet
    STARTING = "starting"      # container running, runtime not yet healthy
    READY = "ready"
    UNHEALTHY = "unhealthy"    # 3 failed health checks in a row; back to READY after 2 good ones
    DRAINING = "draining"      # no new traffic; the scheduler has sent stop
    STOPPING = "stopping"      # the worker is stopping the container (SIGTERM, drain, remove)
    STOPPED = "stopped"        # container gone; the scheduler reaps the record
    FAILED = "failed"          # container exited or could not start; the scheduler replaces it
    # The warm pool (docs/control-plane.md "Scaling"): a scaled-down instance is frozen
    # instead of stopped and thawed when demand comes back.  None of these take traffic;
    # all of them keep their node capacity reserved.
    PAUSING = "pausing"        # the worker waits for in-flight work, then `docker pause`
    PAUSED = "paused"          # frozen (cgroup freezer); drained once older than keep_paused
    RESUMING = "resuming"      # the worker unpauses it and probes /healthz; then READY


# Short names: state.READY is InstanceState.READY.
PENDING = InstanceState.PENDING
STARTING = InstanceState.STARTING
READY = InstanceState.READY
UNHEALTHY = InstanceState.UNHEALTHY
DRAINING = InstanceState.DRAINING
STOPPING = InstanceState.STOPPING
STOPPED = InstanceState.STOPPED
FAILED = InstanceState.FAILED
PAUSING = InstanceState.PAUSING
PAUSED = InstanceState.PAUSED
RESUMING = InstanceState.RESUMING

# Groups the scheduler and the worker reason with.
LIVE_STATES = frozenset({PENDING, STARTING, READY, UNHEALTHY, RESUMING})  # count towards the wanted number
WARM_STATES = frozenset({PAUSING, PAUSED})        # the paused pool: resumed before anything new starts
RUNNING_STATES = frozenset({STARTING, READY, UNHEALTHY})   # the worker health-checks these
ALL_STATES = frozenset(InstanceState)

# The one transition table: the states an instance may ENTER each state from.  The worker's
# and the scheduler's compare-and-set scripts (gantry.keys) are generated from it, so no
# writer can make a move that is not listed here.  PENDING is only ever created.
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    PENDING: frozenset(),
    STARTING: frozenset({PENDING}),
    READY: frozenset({STARTING, UNHEALTHY, RESUMING}),
    UNHEALTHY: frozenset({READY, RESUMING}),
    PAUSING: frozenset({READY, RESUMING}),          # scaled down
    PAUSED: frozenset({PAUSING}),
    RESUMING: frozenset(WARM_STATES),               # scaled up again
    DRAINING: LIVE_STATES | WARM_STATES,            # scaled down, replaced, deleted
    FAILED: LIVE_STATES | WARM_STATES,              # exited, did not start, unhealthy for good
    STOPPING: ALL_STATES,                           # stop is idempotent: any record may get one
    STOPPED: ALL_STATES,                            # so is remove
}


def may_enter(current: str, target: str) -> bool:
    """Whether an instance in ``current`` may move to ``target`` (the table above)."""
    return current in TRANSITIONS.get(target, ())


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def decode_hash(raw: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}


@dataclass
class Instance:
    id: str
    function: str
    version: int
    node: str
    state: InstanceState = PENDING
    host: str = ""
    port: int = 0
    cpu: int = 0            # millicores reserved on the node
    memory: int = 0         # bytes reserved on the node
    concurrency: int = 1
    created: float = 0.0
    epoch: int = 0          # the scheduler epoch that placed it
    reason: str = ""        # why it failed or is unhealthy
    paused_at: float = 0.0  # wall time the scheduler decided to pause it (0: never paused)
    gpus: int = 0           # GPUs it holds (counted against its tenant's quota)
    # The tenant whose usage (keys.tenant_used) it reserved; "" when it reserved none (placed
    # before quotas existed): keys.RELEASE_CAPACITY gives usage back only when set.
    tenant: str = ""
    # The GPUs it leased by UUID (keys.RESERVE_GPU_CAPACITY): "UUID=BYTES,..." (whole GPUs
    # lease their total memory); keys.RELEASE_CAPACITY gives them back with the rest.
    gpu_lease: str = ""
    # The runtime's secret (gantry_runtime.wire.INSTANCE_KEY): the worker writes it with host
    # and port; the gateway sends it with every forward.  Never shown by the admin API.
    key: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_hash(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict) -> "Instance | None":
        data = decode_hash(raw)
        if "id" not in data or "function" not in data:
            return None      # a half-deleted record
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                kwargs[f.name] = (int(value or 0) if f.type == "int" else
                                  float(value or 0) if f.type == "float" else value)
        try:
            kwargs["state"] = InstanceState(kwargs.get("state", PENDING))
        except ValueError:
            return None      # not a state this version knows: leave the record alone
        return cls(**kwargs)


@dataclass
class Node:
    id: str
    host: str               # address the gateway dials to reach this node's instances
    cpu: int                # millicores the node has
    memory: int             # bytes
    gpus: int = 0
    started: float = 0.0
    cpu_allocatable: int = 0   # millicores placement may reserve: cpu x the overcommit factor (0: cpu)
    used_cpu: int = 0          # millicores busy over the last heartbeat interval (the whole node)
    used_memory: int = 0       # bytes in use now (MemTotal - MemAvailable)
    tenant: str = ""           # the tenant the node is labelled for (GANTRY_NODE_TENANT); "": none
    # Its GPUs (worker/gpus.py), JSON of GpuDevice.to_wire() each, refreshed at each heartbeat.
    gpu_inventory: str = ""
    cpu_work: int = 1          # 0: a GPU node that takes no CPU-only instances (GANTRY_GPU_NODE_CPU_WORK)

    @property
    def allocatable_cpu(self) -> int:
        return self.cpu_allocatable or self.cpu

    @property
    def gpu_devices(self) -> list["GpuDevice"]:
        return GpuDevice.decode_list(self.gpu_inventory)

    def to_hash(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict) -> "Node | None":
        data = decode_hash(raw)
        if "id" not in data:
            return None
        kwargs: dict[str, Any] = {"id": data["id"], "host": data.get("host", "127.0.0.1"), "cpu": 0, "memory": 0}
        for f in fields(cls):
            if f.name in data and f.type in ("int", "float"):
                kwargs[f.name] = (float if f.type == "float" else int)(data[f.name] or 0)
        kwargs["tenant"] = data.get("tenant", "")
        kwargs["gpu_inventory"] = data.get("gpu_inventory", "")
        if "cpu_work" not in data:
            kwargs["cpu_work"] = 1       # a record from before the field: it took any work
        return cls(**kwargs)


@dataclass(frozen=True)
class GpuDevice:
    """One GPU of a node as its worker read it through NVML (worker/gpus.py).  Placement uses
    uuid, name, memory and mig; the rest is shown (``gantry nodes``)."""
    uuid: str
    name: str
    memory: int                 # bytes in total
    free: int = 0               # bytes free at the last reading (whoever uses them)
    util: int = -1              # % busy over NVML's last sample period (-1: not supported)
    mig: int = 0                # 1: MIG mode on (never leased whole or shared: see docs/gpus.md)
    procs: tuple[int, ...] = ()  # host PIDs of the compute processes on it

    def to_wire(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "name": self.name, "memory": self.memory, "free": self.free,
                "util": self.util, "mig": self.mig, "procs": list(self.procs)}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "GpuDevice":
        return cls(uuid=str(d["uuid"]), name=str(d.get("name", "")), memory=int(d.get("memory", 0)),
                   free=int(d.get("free", 0)), util=int(d.get("util", -1)), mig=int(d.get("mig", 0)),
                   procs=tuple(int(p) for p in d.get("procs") or ()))

    @staticmethod
    def encode_list(devices: "list[GpuDevice]") -> str:
        """The node record's ``gpu_inventory`` ("" for none): compact JSON, which the lease
        script decodes with cjson."""
        return json.dumps([d.to_wire() for d in devices], separators=(",", ":")) if devices else ""

    @classmethod
    def decode_list(cls, text: str) -> "list[GpuDevice]":
        if not text:
            return []
        try:
            return [cls.from_wire(d) for d in json.loads(text)]
        except (ValueError, TypeError, KeyError):
            return []        # a record this version cannot read: as if it had no GPUs


@dataclass
class Function:
    name: str
    latest: int             # newest deployed version
    active: int             # version that takes traffic
    spec: FunctionSpec      # of the latest version
    image: str              # of the latest version
    updated: float = 0.0
    min_override: int = -1  # `gantry scale NAME N` pins min_instances (-1: the spec's)
    pending_reason: str = ""  # why wanted instances cannot be placed ("" when they can)
    warm: int = 0             # `gantry warm NAME N`: hold at least N instances ...
    warm_until: float = 0.0   # ... until this wall time
    scale_target: int = -1    # the scheduler's last scaling decision (-1: none yet) ...
    scaled_up_at: float = 0.0  # ... when it last scaled up, and
    scaled_at: float = 0.0    # ... when it last changed the target (keys.RECORD_DECISION)

    def warm_now(self, now: float) -> int:
        """The warm hold in force at ``now`` (0: none or expired)."""
        return self.warm if now < self.warm_until else 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "latest": self.latest, "active": self.active, "image": self.image,
                "spec": self.spec.to_dict(), "updated": self.updated, "min_override": self.min_override}


def command(op: str, instance_id: str, epoch: int, **extra: Any) -> bytes:
    """A worker command: op is "start", "stop", "remove", "pause" or "unpause"; start carries
    image and spec."""
    return pack({"op": op, "instance": instance_id, "epoch": epoch, "sent": time.time(), **extra})

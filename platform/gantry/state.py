"""The control plane's shared records and how they sit in Redis (keys in gantry.keys).

Records are HASHes of plain-string fields so that one writer can change one field without a
read-modify-write.  Who writes what:

- function, function_version:  the gateway's admin API (deploy, delete, scale); the
  scheduler moves ``active`` to ``latest`` once the new version is ready.
- instance:  the scheduler creates it (state PENDING, with node, cpu, memory, epoch); the
  worker on that node sets host, port and state as the container starts, turns healthy or
  unhealthy, pauses, resumes and stops; the scheduler sets DRAINING, PAUSING (with
  ``paused_at``) and RESUMING, and deletes records it has reaped.
- node:  the worker registers it and refreshes node_alive (TTL) as its heartbeat.
- function_load:  each gateway replica reports its in-flight and waiting requests.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import msgpack

from . import keys
from .manifest import FunctionSpec

# Instance states.  Only READY instances of the function's active version take traffic.
PENDING = "pending"        # placed by the scheduler; the worker has not started it yet
STARTING = "starting"      # container running, runtime not yet healthy
READY = "ready"
UNHEALTHY = "unhealthy"    # 3 failed health checks in a row; back to READY after 2 good ones
DRAINING = "draining"      # no new traffic; the scheduler will stop it
STOPPING = "stopping"      # the worker is stopping the container (SIGTERM, drain, remove)
STOPPED = "stopped"        # container gone; the scheduler reaps the record
FAILED = "failed"          # container exited or could not start; the scheduler replaces it
# The warm pool (docs/control-plane.md "Scaling"): a scaled-down instance is frozen instead
# of stopped, and thawed when demand comes back.  None of these take traffic; all of them
# keep their node capacity reserved.
PAUSING = "pausing"        # no new traffic; the worker waits for in-flight work, then `docker pause`
PAUSED = "paused"          # frozen (cgroup freezer); drained once older than the spec's keep_paused
RESUMING = "resuming"      # the worker unpauses it and probes /healthz; then READY
# Instances that count towards a function's wanted number (RESUMING is on its way to READY).
LIVE_STATES = (PENDING, STARTING, READY, UNHEALTHY, RESUMING)
WARM_STATES = (PAUSING, PAUSED)   # the paused pool: resumed before anything new is started


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _decode(raw: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}


@dataclass
class Instance:
    id: str
    function: str
    version: int
    node: str
    state: str = PENDING
    host: str = ""
    port: int = 0
    cpu: int = 0            # millicores reserved on the node
    memory: int = 0         # bytes reserved on the node
    concurrency: int = 1
    created: float = 0.0
    epoch: int = 0          # the scheduler epoch that placed it
    reason: str = ""        # why it failed or is unhealthy
    paused_at: float = 0.0  # wall time the scheduler decided to pause it (0: never paused)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_hash(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict) -> "Instance | None":
        data = _decode(raw)
        if "id" not in data or "function" not in data:
            return None      # a half-deleted record
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                kwargs[f.name] = (int(value or 0) if f.type == "int" else
                                  float(value or 0) if f.type == "float" else value)
        return cls(**kwargs)


@dataclass
class Node:
    id: str
    host: str               # address the gateway dials to reach this node's instances
    cpu: int                # millicores
    memory: int             # bytes
    gpus: int = 0
    started: float = 0.0

    def to_hash(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict) -> "Node | None":
        data = _decode(raw)
        if "id" not in data:
            return None
        return cls(id=data["id"], host=data.get("host", "127.0.0.1"), cpu=int(data.get("cpu", 0)),
                   memory=int(data.get("memory", 0)), gpus=int(data.get("gpus", 0)),
                   started=float(data.get("started", 0)))


@dataclass
class Function:
    name: str
    latest: int             # newest deployed version
    active: int             # version that takes traffic
    spec: FunctionSpec      # of the latest version
    image: str              # of the latest version
    updated: float = 0.0
    min_override: int = -1  # `gantry scale NAME N` pins min_instances (-1: the spec's)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "latest": self.latest, "active": self.active, "image": self.image,
                "spec": self.spec.to_dict(), "updated": self.updated, "min_override": self.min_override}


def command(op: str, instance_id: str, epoch: int, **extra: Any) -> bytes:
    """A worker command: op is "start", "stop", "remove", "pause" or "unpause"; start carries
    image and spec."""
    return pack({"op": op, "instance": instance_id, "epoch": epoch, "sent": time.time(), **extra})


async def get_function(r, name: str) -> Function | None:
    """Read a function and its latest version's spec and image (None if not deployed)."""
    raw = _decode(await r.hgetall(keys.function(name)))
    if not raw or "latest" not in raw:
        return None
    latest = int(raw["latest"])
    version = await r.hgetall(keys.function_version(name, latest))
    if not version:
        return None
    spec = FunctionSpec.from_dict(unpack(version[b"spec"]))
    return Function(name=name, latest=latest, active=int(raw.get("active", latest)), spec=spec,
                    image=version[b"image"].decode(), updated=float(raw.get("updated", 0)),
                    min_override=int(raw.get("min_override", -1)))


async def get_version(r, name: str, version: int) -> tuple[str, FunctionSpec] | None:
    raw = await r.hgetall(keys.function_version(name, version))
    if not raw:
        return None
    return raw[b"image"].decode(), FunctionSpec.from_dict(unpack(raw[b"spec"]))


async def get_instances(r, ids) -> list[Instance]:
    ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    if not ids:
        return []
    pipe = r.pipeline(transaction=False)
    for instance_id in ids:
        pipe.hgetall(keys.instance(instance_id))
    found = [Instance.from_hash(raw) for raw in await pipe.execute()]
    return [inst for inst in found if inst is not None]


async def function_instances(r, name: str) -> list[Instance]:
    return await get_instances(r, await r.smembers(keys.function_instances(name)))


async def live_nodes(r) -> list[Node]:
    ids = sorted(i.decode() for i in await r.smembers(keys.NODES))
    if not ids:
        return []
    pipe = r.pipeline(transaction=False)
    for node_id in ids:
        pipe.exists(keys.node_alive(node_id))
        pipe.hgetall(keys.node(node_id))
    results = await pipe.execute()
    nodes = []
    for alive, raw in zip(results[::2], results[1::2]):
        node = Node.from_hash(raw) if alive else None
        if node:
            nodes.append(node)
    return nodes


async def set_instance_state(r, instance_id: str, state: str, reason: str = "", **extra: Any) -> bool:
    """Set an instance's state (and other fields) if its record still exists; announce it."""
    args: list[str] = ["state", state, "reason", reason]
    for k, v in extra.items():
        args += [k, str(v)]
    return bool(await r.eval(keys.UPDATE_INSTANCE, 2, keys.instance(instance_id), keys.EVENTS, *args))

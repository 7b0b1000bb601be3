"""Placement: filter live nodes by free resources, rank them, reserve capacity atomically.

The filter reads each node's allocation once (a hint: it can be stale by the time we
reserve); the reservation itself is ``keys.RESERVE_CAPACITY``, one Lua script that checks
and increments in Redis, so two placements racing for the last room on a node cannot both
win.  A refused reservation just moves on to the next ranked node.

Ranking is a separate function, ``rank_nodes(function_name, candidates)``, so the
consistent-hash tenant placement of gantry.hotpath.placement can replace first fit.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import keys
from ..state import Node


@dataclass(frozen=True)
class Candidate:
    """A live node that fits the request, with what it has free (before this placement)."""
    node: Node
    free_cpu: int           # millicores
    free_memory: int        # bytes

    @property
    def id(self) -> str:
        return self.node.id


@dataclass(frozen=True)
class Request:
    cpu: int                # millicores
    memory: int             # bytes
    gpus: int = 0


def rank_nodes(function_name: str, candidates: list[Candidate]) -> list[Candidate]:
    """Preference order of the nodes that fit.  First fit: by node id, so every replica
    and every pass agree and instances pack onto the first nodes."""
    return sorted(candidates, key=lambda c: c.id)


def _int(raw: dict, field: bytes) -> int:
    try:
        return int(raw.get(field, 0))
    except (TypeError, ValueError):
        return 0


async def candidates(r, nodes: list[Node], req: Request) -> list[Candidate]:
    """The live ``nodes`` whose free CPU and memory (capacity - alloc) fit ``req``, and
    that have at least ``req.gpus`` GPUs (GPU accounting is the worker's: see report)."""
    if not nodes:
        return []
    pipe = r.pipeline(transaction=False)
    for node in nodes:
        pipe.hgetall(keys.node_alloc(node.id))
    allocs = await pipe.execute()
    out = []
    for node, alloc in zip(nodes, allocs):
        free_cpu = node.cpu - _int(alloc, b"cpu")
        free_mem = node.memory - _int(alloc, b"memory")
        if free_cpu >= req.cpu and free_mem >= req.memory and node.gpus >= req.gpus:
            out.append(Candidate(node, free_cpu, free_mem))
    return out


async def reserve(r, node_id: str, req: Request) -> bool:
    """Reserve ``req`` on the node if it is alive and it fits (atomic in Redis)."""
    return bool(await r.eval(keys.RESERVE_CAPACITY, 3, keys.node(node_id), keys.node_alloc(node_id),
                             keys.node_alive(node_id), req.cpu, req.memory))


async def unreserve(r, node_id: str, req: Request) -> None:
    """Give back a reservation that no instance record took over (one key, MULTI)."""
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(keys.node_alloc(node_id), "cpu", -req.cpu)
    pipe.hincrby(keys.node_alloc(node_id), "memory", -req.memory)
    await pipe.execute()


async def place(r, function_name: str, nodes: list[Node], req: Request) -> Node | None:
    """Reserve ``req`` on the best-ranked node that takes it; None if none does."""
    for cand in rank_nodes(function_name, await candidates(r, nodes, req)):
        if await reserve(r, cand.id, req):
            return cand.node
    return None


def no_capacity_reason(nodes: list[Node], req: Request) -> str:
    """What the gateway and CLI show while a wanted instance cannot be placed."""
    need = f"{req.cpu / 1000:g} CPU, {req.memory // 2**20} MiB memory"
    if req.gpus:
        need += f", {req.gpus} GPU"
    if not nodes:
        return f"no capacity: no live nodes (need {need})"
    return f"no capacity: none of {len(nodes)} live node(s) has {need} free"

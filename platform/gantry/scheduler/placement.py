"""Placement: filter live nodes by free resources, rank them, reserve capacity atomically.

The filter reads each node's allocation once (a hint: it can be stale by the time we
reserve); the reservation itself is ``keys.RESERVE_CAPACITY``, one Lua script that checks
and increments in Redis, so two placements racing for the last room on a node cannot both
win.  A refused reservation just moves on to the next ranked node.

Ranking (:class:`Ranker`) is consistent hashing from gantry.hotpath.placement (Cython, or
its Python twin): the nodes of a function's hash ring come first, in ring order, so a
function's instances (a tenant's, once tenants land) prefer the same few nodes (warm image
caches, noisy neighbours contained), and adding or removing one node of N moves about 1/N
of the preferences.  Nodes that fit but sit further round the ring follow, so placement
never fails while any node fits.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..hotpath.placement import Placement
from ..state import Node
from ..store import Store


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


class Ranker:
    """The hash ring over live node ids, kept in step with the node set incrementally."""

    def __init__(self) -> None:
        self._ring = Placement()
        self._members: set[str] = set()

    def sync(self, node_ids) -> None:
        ids = set(node_ids)
        for gone in self._members - ids:
            self._ring.remove_node(gone)
        for new in sorted(ids - self._members):
            self._ring.add_node(new)
        self._members = ids

    def rank(self, function_name: str, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates in the function's ring order (every replica and pass agree)."""
        if not candidates:
            return []
        self.sync(self._members | {c.id for c in candidates})
        order = {node: i for i, node in enumerate(self._ring.rank(function_name, len(self._members)))}
        return sorted(candidates, key=lambda c: (order.get(c.id, len(order)), c.id))


def rank_nodes(function_name: str, candidates: list[Candidate], ranker: Ranker | None = None) -> list[Candidate]:
    """Preference order of the nodes that fit (see :class:`Ranker`)."""
    return (ranker or Ranker()).rank(function_name, candidates)


async def candidates(store: Store, nodes: list[Node], req: Request) -> list[Candidate]:
    """The live ``nodes`` whose free CPU and memory (capacity - alloc) fit ``req``, and
    that have at least ``req.gpus`` GPUs (GPU accounting is the worker's: see report)."""
    out = []
    for node, (cpu, memory) in zip(nodes, await store.node_allocations([n.id for n in nodes])):
        free_cpu, free_mem = node.cpu - cpu, node.memory - memory
        if free_cpu >= req.cpu and free_mem >= req.memory and node.gpus >= req.gpus:
            out.append(Candidate(node, free_cpu, free_mem))
    return out


async def place(store: Store, function_name: str, nodes: list[Node], req: Request,
                ranker: Ranker | None = None) -> Node | None:
    """Reserve ``req`` on the best-ranked node that takes it; None if none does."""
    if ranker is not None:
        ranker.sync(n.id for n in nodes)
    for cand in rank_nodes(function_name, await candidates(store, nodes, req), ranker):
        if await store.reserve(cand.id, req.cpu, req.memory):
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

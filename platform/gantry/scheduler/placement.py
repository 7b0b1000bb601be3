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
from ..manifest import Resources
from ..state import Node
from ..store import Store
from ..tenants.model import Isolation
from . import gpulease
from .gpulease import GpuRequest


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
    gpus: int = 0           # whole GPUs
    gpu_memory: int = 0     # bytes of one GPU (a share); never with gpus
    gpu_type: tuple[str, ...] = ()

    @classmethod
    def of(cls, res: Resources) -> "Request":
        return cls(cpu=res.cpu_request_millis, memory=res.memory, gpus=res.gpu, gpu_memory=res.gpu_memory,
                   gpu_type=res.gpu_type)

    @property
    def gpu(self) -> GpuRequest:
        return GpuRequest(self.gpus, self.gpu_memory, self.gpu_type)


@dataclass(frozen=True)
class Placed:
    node: Node
    lease: list[tuple[str, int]]    # (uuid, bytes) leased; [] for a CPU-only instance


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


def node_takes(node: Node, tenant: str, isolation: str) -> bool:
    """Whether NODE may run an instance of TENANT at ISOLATION: a node labelled for a tenant
    (GANTRY_NODE_TENANT) runs that tenant's instances only, and a ``node``-isolated tenant's
    instances run only on nodes labelled for it."""
    if node.tenant:
        return node.tenant == tenant
    return isolation != Isolation.NODE


def for_tenant(nodes: list[Node], tenant: str, isolation: str) -> list[Node]:
    """The NODES that may run TENANT's instances (``node_takes``), in their order."""
    return [n for n in nodes if node_takes(n, tenant, isolation)]


def no_node_reason(tenant: str, isolation: str, nodes: list[Node]) -> str:
    """Why none of the live NODES may run the tenant's instances ("" when some may)."""
    if not nodes or for_tenant(nodes, tenant, isolation):
        return ""
    if isolation == Isolation.NODE:
        return (f"no node is labelled for tenant {tenant} (GANTRY_NODE_TENANT): its isolation is node, "
                f"and none of the {len(nodes)} live node(s) is labelled for it")
    return (f"no node may run tenant {tenant}'s instances: every one of the {len(nodes)} live node(s) is "
            "labelled for another tenant (GANTRY_NODE_TENANT)")


def takes(node: Node, req: Request) -> bool:
    """Whether NODE takes this kind of work at all: a GPU request needs GPUs; a CPU-only one
    goes to a GPU node only when its worker allows it (GANTRY_GPU_NODE_CPU_WORK)."""
    if req.gpu.wanted:
        return node.gpus > 0
    return node.gpus == 0 or bool(node.cpu_work)


async def candidates(store: Store, nodes: list[Node], req: Request) -> list[Candidate]:
    """The live ``nodes`` that take the kind of work (``takes``) and whose free CPU and
    memory (capacity - alloc) fit ``req``, and for a GPU request whose GPUs fit it now
    (gpulease.choose over the leases read: a hint, the reservation decides again)."""
    nodes = [n for n in nodes if takes(n, req)]
    ids = [n.id for n in nodes]
    allocs = await store.node_allocations(ids)
    leases = await store.node_gpu_leases(ids) if req.gpu.wanted else [{}] * len(nodes)
    out = []
    for node, (cpu, memory), used in zip(nodes, allocs, leases):
        free_cpu, free_mem = node.allocatable_cpu - cpu, node.memory - memory
        if free_cpu < req.cpu or free_mem < req.memory:
            continue
        if req.gpu.wanted and gpulease.choose(node.gpu_devices, used, req.gpu) is None:
            continue
        out.append(Candidate(node, free_cpu, free_mem))
    return out


async def place(store: Store, function_name: str, nodes: list[Node], req: Request,
                ranker: Ranker | None = None, tenant: str | None = None) -> Node | None:
    """Reserve ``req`` on the best-ranked node that takes it; None if none does.  With
    ``tenant`` its usage is reserved in the same script; QuotaExceeded (from the store) when
    its quota refuses: no other node would take it either, so none is tried."""
    if ranker is not None:
        ranker.sync(n.id for n in nodes)
    for cand in rank_nodes(function_name, await candidates(store, nodes, req), ranker):
        if await store.reserve(cand.id, req.cpu, req.memory, tenant, req.gpus):
            return cand.node
    return None


async def place_gpu(store: Store, epoch: int, function_name: str, nodes: list[Node], req: Request,
                    ranker: Ranker | None = None, tenant: str | None = None) -> Placed | None:
    """As ``place`` for a GPU request: the lease (keys.RESERVE_GPU_CAPACITY, fenced by EPOCH:
    Deposed when stale) on the best-ranked node whose GPUs take it.  Placed, or None."""
    if ranker is not None:
        ranker.sync(n.id for n in nodes)
    g = req.gpu
    for cand in rank_nodes(function_name, await candidates(store, nodes, req), ranker):
        lease = await store.reserve_gpus(epoch, cand.id, req.cpu, req.memory, g.count, g.memory, g.types, tenant)
        if lease:
            return Placed(cand.node, lease)
    return None


def no_cpu_work_reason(req: Request, nodes: list[Node]) -> str:
    """Why a CPU-only request waits when every live node is a GPU node that takes no CPU work
    ("" when some node takes it)."""
    if req.gpu.wanted or not nodes or any(takes(n, req) for n in nodes):
        return ""
    return (f"no capacity: every one of the {len(nodes)} live node(s) has GPUs and takes GPU instances only "
            "(GANTRY_GPU_NODE_CPU_WORK=1 on a worker lets it take CPU-only instances)")


def no_gpu_reason(req: Request, nodes: list[Node], leases: list[dict[str, int]]) -> str:
    """Why a GPU request waits: nothing could ever hold it (gpulease.why_none_holds), or every
    node that could has its fitting GPUs leased now."""
    never = gpulease.why_none_holds({n.id: n.gpu_devices for n in nodes}, req.gpu)
    if never:
        return "no capacity: " + never
    busy = [n.id for n, used in zip(nodes, leases)
            if not gpulease.never_fits(n.gpu_devices, req.gpu) and gpulease.choose(n.gpu_devices, used, req.gpu) is None]
    if busy:
        return (f"no capacity: asked for {req.gpu.describe()}; the GPUs that fit it are leased on "
                f"{', '.join(busy)}, and no paused or idle instance can be stopped for it")
    return ""


def no_capacity_reason(req: Request, free: list[tuple[str, int, int]]) -> str:
    """What the gateway and CLI show while a wanted instance cannot be placed and no room can
    be made: what is asked, the most any live node has free, and which resource is short.
    ``free``: (node id, free CPU millicores, free memory bytes) per live node."""
    need = f"{req.cpu / 1000:g} CPU and {req.memory // 2**20} MiB memory"
    if req.gpus:
        need += f" and {req.gpus} GPU"
    if not free:
        return f"no capacity: no live nodes (asked for {need})"
    node_cpu, most_cpu, _ = max(free, key=lambda f: f[1])
    node_mem, _, most_mem = max(free, key=lambda f: f[2])
    cpu_short, mem_short = most_cpu < req.cpu, most_mem < req.memory
    short = ("CPU and memory are" if cpu_short and mem_short else "CPU is" if cpu_short
             else "memory is" if mem_short else "no node has both CPU and memory")
    return (f"no capacity: asked for {need}; the most free on any of {len(free)} live node(s) is "
            f"{max(0, most_cpu) / 1000:g} CPU ({node_cpu}) and {max(0, most_mem) // 2**20} MiB memory "
            f"({node_mem}): {short} short, and no paused or idle instance can be stopped for it")

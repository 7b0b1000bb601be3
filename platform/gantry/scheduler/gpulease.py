"""Which GPUs of a node an instance leases, by UUID: the pure decision.

``keys.RESERVE_GPU_CAPACITY`` makes the same decision inside Redis, atomically with the CPU
and memory reservation (tests/scheduler/test_gpu_lease.py checks that both agree); this twin
serves the filter before a reservation, the deploy check, refusal messages and
scripts/gpu_check.py (a GPU machine without Redis).

Rules (docs/gpus.md):

- a GPU in MIG mode, or one whose memory NVML did not report, is never leased;
- ``gpu_type`` ranks GPUs: the index of the first name that is a case-insensitive part of the
  GPU's name; a GPU that matches none is not eligible (no ``gpu_type``: every GPU ranks 0);
- ``gpu = N`` takes N GPUs nobody leases any of, all of one rank, the best rank that has N
  free, in the node's NVML order; each lease takes the GPU's whole memory;
- ``gpu_memory = B`` takes B bytes of the one GPU that ranks best and, among those, fits
  best (the least memory left after it, so shares pack onto cards already shared and whole
  GPUs stay free), lowest index on a tie.

A lease is "UUID=BYTES,...", the form the instance record and the start command carry.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..state import GpuDevice


@dataclass(frozen=True)
class GpuRequest:
    count: int = 0                  # whole GPUs
    memory: int = 0                 # bytes of one GPU (a share)
    types: tuple[str, ...] = ()     # preference, best first

    @property
    def wanted(self) -> bool:
        return self.count > 0 or self.memory > 0

    @property
    def quota_gpus(self) -> int:
        """What it counts against a tenant's ``gpus`` quota: a share counts as one GPU."""
        return self.count if self.count else (1 if self.memory else 0)

    def describe(self) -> str:
        what = (f"{self.count} whole GPU{'s' if self.count > 1 else ''}" if self.count
                else f"{self.memory // 2**20} MiB of one GPU")
        return what + (f" of type {' or '.join(self.types)}" if self.types else "")


def rank(name: str, types: tuple[str, ...]) -> int | None:
    """The GPU's place in the preference (0 best), None when it matches no type."""
    if not types:
        return 0
    lower = name.lower()
    for i, t in enumerate(types):
        if t.lower() in lower:
            return i
    return None


def leasable(dev: GpuDevice) -> bool:
    return not dev.mig and dev.memory > 0


def choose(devices: list[GpuDevice], used: dict[str, int], req: GpuRequest) -> list[tuple[str, int]] | None:
    """The (uuid, bytes) to lease on a node with DEVICES of which USED (uuid -> bytes leased)
    is taken; None if the request does not fit now."""
    ranked = [(r, i, d) for i, d in enumerate(devices)
              if leasable(d) and (r := rank(d.name, req.types)) is not None]
    if req.count:
        groups: dict[int, list[GpuDevice]] = {}
        for r, _, d in ranked:
            if used.get(d.uuid, 0) <= 0:
                groups.setdefault(r, []).append(d)
        for r in sorted(groups):
            if len(groups[r]) >= req.count:
                return [(d.uuid, d.memory) for d in groups[r][:req.count]]
        return None
    if req.memory:
        fits = [(r, d.memory - used.get(d.uuid, 0) - req.memory, i, d) for r, i, d in ranked
                if d.memory - used.get(d.uuid, 0) >= req.memory]
        if not fits:
            return None
        best = min(fits, key=lambda f: f[:3])[3]
        return [(best.uuid, req.memory)]
    return []


def never_fits(devices: list[GpuDevice], req: GpuRequest) -> bool:
    """Whether the request could not fit even with none of the node's GPUs leased."""
    return choose(devices, {}, req) is None


def encode(lease: list[tuple[str, int]]) -> str:
    return ",".join(f"{uuid}={n}" for uuid, n in lease)


def decode(text: str) -> list[tuple[str, int]]:
    out = []
    for part in (text or "").split(","):
        uuid, sep, n = part.partition("=")
        if sep and uuid and n.isdigit():
            out.append((uuid, int(n)))
    return out


def uuids(text: str) -> list[str]:
    return [uuid for uuid, _ in decode(text)]


def why_none_holds(devices_by_node: dict[str, list[GpuDevice]], req: GpuRequest) -> str:
    """Why no live node could ever hold REQ ("" when one could, free GPUs or not): what the
    deploy refusal and the placement message say, naming what is missing."""
    if not devices_by_node:
        return f"no live node can hold it: asked for {req.describe()}, and no node is live"
    every = [d for devs in devices_by_node.values() for d in devs]
    usable = [d for d in every if leasable(d)]
    if not usable:
        if every:
            return (f"no live node can hold it: asked for {req.describe()}; the {len(every)} GPU(s) of the "
                    f"{len(devices_by_node)} live node(s) are all in MIG mode or report no memory")
        return (f"no live node can hold it: asked for {req.describe()}, and none of the "
                f"{len(devices_by_node)} live node(s) has a GPU")
    typed = [d for d in usable if rank(d.name, req.types) is not None]
    if not typed:
        names = sorted({d.name for d in usable})
        return (f"no live node can hold it: asked for {req.describe()}; no GPU of that type on any live node "
                f"(they have: {', '.join(names)})")
    if any(not never_fits(devs, req) for devs in devices_by_node.values()):
        return ""
    if req.count:
        most = max(sum(1 for d in devs if leasable(d) and rank(d.name, req.types) is not None)
                   for devs in devices_by_node.values())
        return (f"no live node can hold it: asked for {req.describe()}; the most such GPUs on one node is "
                f"{most}")
    biggest = max(typed, key=lambda d: d.memory)
    return (f"no live node can hold it: asked for {req.describe()}; the largest such GPU has "
            f"{biggest.memory // 2**20} MiB ({biggest.name})")

"""Check the GPU inventory and the lease decision on a real GPU machine; print JSON.

    PYTHONPATH=platform:runtime python scripts/gpu_check.py           # real NVML (nvidia-ml-py)
    PYTHONPATH=platform:runtime python scripts/gpu_check.py --fake    # the fake NVML, anywhere

Made for a machine with GPUs, nvidia-ml-py and torch but no Docker, Redis or network: the
inventory is read with worker/gpus.py exactly as a worker reads it (and, where torch can see
CUDA, compared with what torch reports of the same GPUs), and the leases are simulated with
the pure decision (scheduler/gpulease.choose, the twin of the Lua script the scheduler runs
in Redis): random whole-GPU and memory-share requests placed and released, checked for
double allocations and leaks.  Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

from gantry.scheduler import gpulease
from gantry.scheduler.gpulease import GpuRequest
from gantry.state import GpuDevice
from gantry.worker import fakenvml
from gantry.worker.gpus import GpuInventory


def torch_view() -> dict:
    """What torch says of the CUDA devices (UUIDs and total memory), to compare with NVML."""
    try:
        import torch
    except ImportError as exc:
        return {"available": False, "why": f"no torch ({exc})"}
    if not torch.cuda.is_available():
        return {"available": False, "why": "torch.cuda.is_available() is False"}
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        uuid = getattr(p, "uuid", None)
        free, total = torch.cuda.mem_get_info(i)
        out.append({"index": i, "name": p.name, "uuid": f"GPU-{uuid}" if uuid is not None else None,
                    "total": int(p.total_memory), "mem_get_info_total": int(total), "free": int(free)})
    return {"available": True, "torch": torch.__version__, "devices": out}


def compare(devices: list[GpuDevice], view: dict) -> list[str]:
    """Differences between NVML's inventory and torch's (by UUID where torch gives one)."""
    if not view.get("available"):
        return []
    problems = []
    if len(view["devices"]) != len([d for d in devices if not d.mig]):
        problems.append(f"NVML lists {len(devices)} GPU(s), torch sees {len(view['devices'])}")
    by_uuid = {d.uuid: d for d in devices}
    for t in view["devices"]:
        d = by_uuid.get(t["uuid"]) if t["uuid"] else None
        if t["uuid"] and d is None:
            problems.append(f"torch device {t['index']} ({t['uuid']}) is not in NVML's inventory")
        elif d is not None and abs(d.memory - t["mem_get_info_total"]) > 2**20 * 512:
            problems.append(f"{d.uuid}: NVML total {d.memory} vs torch {t['mem_get_info_total']}")
    return problems


def simulate(devices: list[GpuDevice], rounds: int, seed: int) -> dict:
    """Place and release random requests with gpulease.choose; count double allocations
    (a GPU over its memory, a whole GPU in two leases) and leaks (bytes left after all end)."""
    rng = random.Random(seed)
    total = {d.uuid: d.memory for d in devices}
    used: dict[str, int] = {}
    live: list[list[tuple[str, int]]] = []
    placed = refused = double = 0
    biggest = max((d.memory for d in devices), default=0)
    started = time.perf_counter()
    for _ in range(rounds):
        if live and rng.random() < 0.45:
            for uuid, n in live.pop(rng.randrange(len(live))):
                used[uuid] -= n
            continue
        if rng.random() < 0.35:
            req = GpuRequest(count=rng.choice([1, 1, 1, 2]))
        else:
            req = GpuRequest(memory=max(2**20, int(biggest * rng.choice([0.05, 0.1, 0.25, 0.4]))))
        lease = gpulease.choose(devices, used, req)
        if lease is None:
            refused += 1
            continue
        placed += 1
        for uuid, n in lease:
            used[uuid] = used.get(uuid, 0) + n
        live.append(lease)
        holders: dict[str, int] = {}
        for held in live:
            for uuid, n in held:
                holders[uuid] = holders.get(uuid, 0) + 1
                if n == total[uuid] and holders[uuid] > 1:
                    double += 1
        double += sum(1 for uuid, n in used.items() if n > total[uuid])
    while live:
        for uuid, n in live.pop():
            used[uuid] -= n
    return {"rounds": rounds, "placed": placed, "refused": refused, "double_allocations": double,
            "leaks": sum(1 for n in used.values() if n), "seconds": round(time.perf_counter() - started, 3),
            "decisions_per_second": round((placed + refused) / max(1e-9, time.perf_counter() - started))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fake", action="store_true", help="read the fake NVML (two H100s and an L4) instead")
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args(argv)
    nvml = fakenvml.from_setting("NVIDIA H100 80GB HBM3:80Gi,NVIDIA H100 80GB HBM3:80Gi,NVIDIA L4:24Gi",
                                 seed="check") if args.fake else None
    inventory = GpuInventory(nvml)
    t0 = time.perf_counter()
    devices = inventory.read()
    first_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    inventory.read()
    refresh_ms = (time.perf_counter() - t0) * 1000
    view = {"available": False, "why": "--fake"} if args.fake else torch_view()
    mismatches = compare(devices, view)
    report = {
        "nvml": "fake" if args.fake else "real",
        "inventory": [d.to_wire() for d in devices],
        "empty_reason": inventory.reason,
        "read_ms": {"first": round(first_ms, 2), "refresh": round(refresh_ms, 2)},
        "node_record_bytes": len(GpuDevice.encode_list(devices)),
        "torch": view,
        "mismatches": mismatches,
        "leasable": [d.uuid for d in devices if gpulease.leasable(d)],
        "simulation": simulate([d for d in devices if gpulease.leasable(d)], args.rounds, args.seed)
        if any(gpulease.leasable(d) for d in devices) else None,
    }
    inventory.close()
    print(json.dumps(report, indent=2))
    sim = report["simulation"]
    ok = bool(devices) and not mismatches and sim is not None and not sim["double_allocations"] and not sim["leaks"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

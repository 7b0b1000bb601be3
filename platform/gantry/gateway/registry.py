"""What the admin API answers about functions, versions, nodes and logs, read and written
through gantry.store (the delete is a WATCH/MULTI of its own, never read-modify-write).
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any


from .. import state
from ..manifest import FunctionSpec
from ..store import Store, UnreadableRecord


_LAST_STREAM_ID = f"{2**64 - 1}-{2**64 - 1}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def deploy(store: Store, spec: FunctionSpec, image: str) -> tuple[int, int]:
    """Register a new version of spec.name: returns (version, active version)."""
    return await store.deploy_version(spec, image)


async def delete(store: Store, name: str) -> bool:
    """Remove fn:NAME, its versions and its FUNCTIONS membership (the scheduler drains the
    instances it finds without a function).  False if there was no such function."""
    return await store.delete_function(name)


async def set_min_override(store: Store, name: str, n: int) -> bool:
    return await store.update_function(name, min_override=n)


async def set_warm(store: Store, name: str, n: int, until: float) -> bool:
    return await store.update_function(name, warm=n, warm_until=until)


async def function_summary(store: Store, name: str) -> tuple[dict[str, Any], list[state.Instance]] | None:
    """What GET /v1/functions lists (and the instances GET /v1/functions/NAME adds).  A
    function whose stored record cannot be read is still listed, with ``error`` saying why
    and no spec, so one bad record does not hide the others."""
    try:
        fn = await store.get_function(name)
        if fn is None:
            return None
        active_spec = fn.spec
        if fn.active != fn.latest:
            found = await store.get_version(name, fn.active)
            if found is not None:
                active_spec = found[1]
    except UnreadableRecord as exc:
        return await _unreadable_summary(store, name, str(exc))
    instances = await store.function_instances(name)
    states = Counter(i.state for i in instances)
    failed = await store.start_failure(name)
    return {
        "name": name, "latest": fn.latest, "active": fn.active, "image": fn.image,
        "min_override": fn.min_override if fn.min_override >= 0 else None,
        "ready": states.get(state.READY, 0), "total": len(instances),
        "states": dict(sorted(states.items())),
        "spec": fn.spec.to_dict(), "active_spec": active_spec.to_dict(),
        "updated": fn.updated,
        "pending_reason": fn.pending_reason or None,
        "start_failed": {"version": failed.version, "cause": failed.cause} if failed else None,
        # the scaling policy's state (docs/control-plane.md "Scaling")
        "scale_target": fn.scale_target if fn.scale_target >= 0 else None,
        "warm": ({"instances": fn.warm, "until": fn.warm_until}
                 if fn.warm_now(time.time()) else None),
        "error": None,
    }, instances


async def _unreadable_summary(store: Store, name: str, error: str) -> tuple[dict[str, Any], list[state.Instance]]:
    raw = await store.function_fields(name)
    instances = await store.function_instances(name)
    states = Counter(i.state for i in instances)

    def number(key: str, kind: type = int):
        try:
            return kind(raw[key])
        except (KeyError, ValueError):
            return None

    return {
        "name": name, "latest": number("latest"), "active": number("active"), "image": None,
        "min_override": None, "ready": states.get(state.READY, 0), "total": len(instances),
        "states": dict(sorted(states.items())), "spec": None, "active_spec": None,
        "updated": number("updated", float), "pending_reason": raw.get("pending_reason") or None,
        "start_failed": None, "scale_target": None, "warm": None, "error": error,
    }, instances


async def function_names(store: Store) -> list[str]:
    return await store.function_names()


async def nodes(store: Store) -> list[dict[str, Any]]:
    found = await store.live_nodes()
    ids = [n.id for n in found]
    allocs = await store.node_allocations(ids)
    members = await store.instance_sets([(None, node_id) for node_id in ids])
    out = []
    for node, (cpu, memory), instance_ids in zip(found, allocs, members):
        insts = await store.get_instances(instance_ids)
        out.append({
            "id": node.id, "host": node.host, "gpus": node.gpus, "started": node.started,
            "tenant": node.tenant or None,                         # labelled for (GANTRY_NODE_TENANT)
            "capacity": {"cpu": node.cpu, "memory": node.memory},
            "allocatable": {"cpu": node.allocatable_cpu, "memory": node.memory},
            "allocated": {"cpu": cpu, "memory": memory},          # requested by the instances placed there
            "used": {"cpu": node.used_cpu, "memory": node.used_memory},   # really in use now (the whole node)
            "instances": len(insts),
            "states": dict(sorted(Counter(i.state for i in insts).items())),
        })
    return out


async def logs(store: Store, name: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Entries of keys.function_logs(name) strictly after the cursor, and the next cursor."""
    if after == _LAST_STREAM_ID:   # nothing can follow it (and Redis refuses it as an exclusive start)
        return [], after
    entries = await store.read_logs(name, after, limit)
    out = []
    for entry_id, fields in entries:
        item = {"id": _s(entry_id)}
        item.update({_s(k): _s(v) for k, v in fields.items()})
        out.append(item)
    return out, (out[-1]["id"] if out else after)

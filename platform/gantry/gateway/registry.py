"""What the admin API answers about functions, versions, nodes and logs, read and written
through gantry.store (the delete is a WATCH/MULTI of its own, never read-modify-write).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any


from .. import logview, state
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
    leases = await store.node_gpu_leases(ids)
    members = await store.instance_sets([(None, node_id) for node_id in ids])
    out = []
    for node, (cpu, memory), instance_ids, leased in zip(found, allocs, members, leases):
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
            "gpu_devices": [{**d.to_wire(), "leased": leased.get(d.uuid, 0)} for d in node.gpu_devices],
            "cpu_work": bool(node.cpu_work),
        })
    return out


@dataclass(frozen=True)
class LogQuery:
    """What GET /v1/functions/NAME/logs asks for (None: no such filter)."""
    after: str | None = None          # a cursor: entries strictly after it
    limit: int = 100
    since_ms: int | None = None       # entries that reached Redis at or after this
    instance: str | None = None       # an instance id or a prefix of it (logview.instance_matches)
    level: str | None = None          # this level and above (logview.LEVELS)
    tail: int | None = None           # the last N matching entries instead of the first LIMIT


LOG_SCAN_MAX = 10_000   # entries one request reads at most while filtering (then `more` is true)


def _entry(entry_id: Any, fields: dict) -> dict[str, Any]:
    item = {"id": _s(entry_id)}
    item.update({_s(k): _s(v) for k, v in fields.items()})
    return item


async def logs(store: Store, name: str, q: LogQuery) -> tuple[list[dict[str, Any]], str | None, bool]:
    """Entries of keys.function_logs(name) that pass the query's filters, oldest first; the
    cursor to pass as ``after`` next (the last entry read, matching or not) and whether more
    entries may follow now (the scan stopped at LIMIT matches or at LOG_SCAN_MAX read)."""
    if q.after == _LAST_STREAM_ID:   # nothing can follow it (and Redis refuses it as an exclusive start)
        return [], q.after, False
    if q.tail is not None:
        return await _tail(store, name, q)
    out: list[dict[str, Any]] = []
    cursor, scanned = q.after, 0
    while scanned < LOG_SCAN_MAX:
        ask = min(max(q.limit, 100) if q.instance or q.level else q.limit, LOG_SCAN_MAX - scanned)
        batch = await store.read_logs(name, cursor, ask, since_ms=q.since_ms)
        for entry_id, fields in batch:
            item = _entry(entry_id, fields)
            cursor = item["id"]
            scanned += 1
            if logview.matches(item, q.instance, q.level):
                out.append(item)
                if len(out) == q.limit:
                    return out, cursor, True
        if len(batch) < ask:
            return out, cursor, False          # the stream's end
    return out, cursor, True


async def _tail(store: Store, name: str, q: LogQuery) -> tuple[list[dict[str, Any]], str | None, bool]:
    """The last q.tail matching entries, read newest first; the cursor is the newest entry read."""
    out: list[dict[str, Any]] = []
    before, newest, scanned = None, q.after, 0
    while scanned < LOG_SCAN_MAX and len(out) < q.tail:
        ask = min(max(q.tail, 100), LOG_SCAN_MAX - scanned)
        batch = await store.read_logs_back(name, before, ask, after=q.after, since_ms=q.since_ms)
        for entry_id, fields in batch:
            item = _entry(entry_id, fields)
            if newest == q.after:
                newest = item["id"]
            before = item["id"]
            scanned += 1
            if logview.matches(item, q.instance, q.level):
                out.append(item)
                if len(out) == q.tail:
                    break
        if len(batch) < ask:
            break
    out.reverse()
    return out, newest, False

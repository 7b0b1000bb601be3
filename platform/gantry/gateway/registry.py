"""The admin API's reads and writes of functions, versions, nodes and logs in Redis.

These would sit in gantry.state, which another component owns; they are here until they
move.  Writes that touch several keys go through keys.DEPLOY_VERSION / keys.UPDATE_FUNCTION
or WATCH/MULTI, never read-modify-write.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

from redis.exceptions import WatchError

from .. import keys, state
from ..manifest import FunctionSpec


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def deploy(r, spec: FunctionSpec, image: str) -> tuple[int, int]:
    """Register a new version of spec.name: returns (version, active version)."""
    version = int(await r.incr(keys.function_seq(spec.name)))
    now = time.time()
    await r.hset(keys.function_version(spec.name, version),
                 mapping={"image": image, "spec": state.pack(spec.to_dict()), "created": str(now)})
    active = await r.eval(keys.DEPLOY_VERSION, 3, keys.function(spec.name), keys.FUNCTIONS, keys.EVENTS,
                          spec.name, str(version), str(now))
    return version, int(active)


async def delete(r, name: str) -> bool:
    """Remove fn:NAME, its versions and its FUNCTIONS membership (the scheduler drains the
    instances it finds without a function).  False if there was no such function."""
    key = keys.function(name)
    async with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                latest = await pipe.hget(key, "latest")
                if latest is None:
                    await pipe.reset()
                    await r.srem(keys.FUNCTIONS, name)   # a stray membership
                    return False
                pipe.multi()
                pipe.delete(key, *[keys.function_version(name, v) for v in range(1, int(latest) + 1)])
                pipe.srem(keys.FUNCTIONS, name)
                pipe.publish(keys.EVENTS, f"fn:{name}")
                await pipe.execute()
                return True
            except WatchError:  # a deploy raced us: look again
                continue


async def set_min_override(r, name: str, n: int) -> bool:
    return bool(await r.eval(keys.UPDATE_FUNCTION, 2, keys.function(name), keys.EVENTS,
                             name, str(time.time()), "min_override", str(n)))


async def function_summary(r, name: str) -> tuple[dict[str, Any], list[state.Instance]] | None:
    """What GET /v1/functions lists (and the instances GET /v1/functions/NAME adds)."""
    fn = await state.get_function(r, name)
    if fn is None:
        return None
    raw = await r.hgetall(keys.function(name))
    instances = await state.function_instances(r, name)
    states = Counter(i.state for i in instances)
    active_spec = fn.spec
    if fn.active != fn.latest:
        found = await state.get_version(r, name, fn.active)
        if found is not None:
            active_spec = found[1]
    return {
        "name": name, "latest": fn.latest, "active": fn.active, "image": fn.image,
        "min_override": fn.min_override if fn.min_override >= 0 else None,
        "ready": states.get(state.READY, 0), "total": len(instances),
        "states": dict(sorted(states.items())),
        "spec": fn.spec.to_dict(), "active_spec": active_spec.to_dict(),
        "updated": fn.updated,
        "pending_reason": _s(raw[b"pending_reason"]) if raw.get(b"pending_reason") else None,
    }, instances


async def function_names(r) -> list[str]:
    return sorted(_s(n) for n in await r.smembers(keys.FUNCTIONS))


async def nodes(r) -> list[dict[str, Any]]:
    found = await state.live_nodes(r)
    if not found:
        return []
    pipe = r.pipeline(transaction=False)
    for node in found:
        pipe.hgetall(keys.node_alloc(node.id))
        pipe.smembers(keys.node_instances(node.id))
    results = await pipe.execute()
    out = []
    for node, alloc, ids in zip(found, results[::2], results[1::2]):
        insts = await state.get_instances(r, ids)
        out.append({
            "id": node.id, "host": node.host, "gpus": node.gpus, "started": node.started,
            "capacity": {"cpu": node.cpu, "memory": node.memory},
            "allocated": {"cpu": int(alloc.get(b"cpu", 0)), "memory": int(alloc.get(b"memory", 0))},
            "instances": len(insts),
            "states": dict(sorted(Counter(i.state for i in insts).items())),
        })
    return out


async def logs(r, name: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Entries of keys.function_logs(name) strictly after the cursor, and the next cursor."""
    start = f"({after}" if after else "-"
    entries = await r.xrange(keys.function_logs(name), min=start, max="+", count=limit)
    out = []
    for entry_id, fields in entries:
        item = {"id": _s(entry_id)}
        item.update({_s(k): _s(v) for k, v in fields.items()})
        out.append(item)
    return out, (out[-1]["id"] if out else after)

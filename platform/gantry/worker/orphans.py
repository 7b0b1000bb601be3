"""Orphans: containers labelled for this node (gantry.managed=1, gantry.node=NODE) that no
instance record owns, left by a crash, a lost command or a record the scheduler reaped.
Only this node's label is swept, so agents sharing one engine never touch each other's."""
from __future__ import annotations

from .. import keys
from .containers import LABEL_INSTANCE


async def find_orphans(redis, node: str, containers: list, busy: set[str]) -> list:
    """The containers among CONTAINERS whose instance has no record placed on NODE.
    Instances in BUSY (a command is acting on them now) are never orphans."""
    candidates = [(c, c.labels.get(LABEL_INSTANCE, "")) for c in containers]
    candidates = [(c, i) for c, i in candidates if i not in busy]
    if not candidates:
        return []
    pipe = redis.pipeline(transaction=False)
    for _, instance in candidates:
        pipe.hget(keys.instance(instance or "-"), "node")
    owners = await pipe.execute()
    orphans = []
    for (container, instance), owner in zip(candidates, owners):
        owner = owner.decode() if isinstance(owner, bytes) else owner
        if not instance or owner != node:
            orphans.append(container)
    return orphans

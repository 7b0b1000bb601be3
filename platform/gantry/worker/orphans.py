"""Orphans: containers labelled for this node (gantry.managed=1, gantry.node=NODE) that no
instance record owns, left by a crash, a lost command or a record the scheduler reaped.
Only this node's label is swept, so agents sharing one engine never touch each other's.
A sandbox (worker/spares.py) belongs to the instance it serves (its gantry.sandbox label)."""
from __future__ import annotations

from .containers import instance_of


async def find_orphans(store, node: str, containers: list, busy: set[str]) -> list:
    """The containers among CONTAINERS whose instance has no record placed on NODE.
    Instances in BUSY (a command is acting on them now) are never orphans."""
    candidates = [(c, instance_of(c.labels)) for c in containers]
    candidates = [(c, i) for c, i in candidates if i not in busy]
    if not candidates:
        return []
    owners = await store.instance_nodes([instance or "-" for _, instance in candidates])
    orphans = []
    for (container, instance), owner in zip(candidates, owners):
        if not instance or owner != node:
            orphans.append(container)
    return orphans

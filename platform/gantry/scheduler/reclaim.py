"""Reclaim under pressure: which instances to stop so that a new one fits.

When a wanted instance fits on no live node, room is made on ONE node, in this order:

1. paused (or pausing) instances, least recently paused first: the warm pool is a cache;
2. ready instances that serve nobody: their function has no request in flight or waiting
   on any gateway, and more live instances than its ``min_instances``; least recently
   used function first (the gateways' last-request times), then the newest instance.

Never an instance with requests in flight (a function with demand is not touched), never
below a function's ``min_instances``, never the requesting function's own instances.
Instances already on their way out (draining, stopping, stopped) count as room that is
coming, so a pass that finds enough of it waits instead of stopping more.

``choose`` is the decision (pure); the reconciler gathers its inputs and drains the victims.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import state
from ..state import Instance

# Instances whose resources come back soon: the stop is already under way.
LEAVING = frozenset({state.DRAINING, state.STOPPING, state.STOPPED})


@dataclass(frozen=True)
class NodeRoom:
    node: str
    free_cpu: int           # allocatable - reserved, millicores (may be negative after a change)
    free_memory: int        # bytes


@dataclass
class Decision:
    node: str = ""                                          # where room is made ("" when it cannot be)
    victims: list[Instance] = field(default_factory=list)   # to drain now
    waiting: bool = False                                   # enough is already being freed there


@dataclass(frozen=True)
class Holder:
    """What the chooser needs to know of a function that holds instances."""
    busy: bool              # requests in flight or waiting on some gateway
    spare: int              # live instances above its min_instances
    last_request: float     # wall time of its last request (0: never)


def _fits(cpu: int, memory: int, need_cpu: int, need_memory: int) -> bool:
    return cpu >= need_cpu and memory >= need_memory


def choose(need_cpu: int, need_memory: int, requester: str, rooms: list[NodeRoom],
           instances: list[Instance], holders: dict[str, Holder]) -> Decision:
    """Where to make room for (need_cpu, need_memory) and which instances to stop for it.
    Prefers a node where room is already coming, then the node needing the fewest victims."""
    best: Decision | None = None
    for room in rooms:
        on_node = [i for i in instances if i.node == room.node]
        cpu = room.free_cpu + sum(i.cpu for i in on_node if i.state in LEAVING)
        memory = room.free_memory + sum(i.memory for i in on_node if i.state in LEAVING)
        if _fits(cpu, memory, need_cpu, need_memory):
            return Decision(node=room.node, waiting=True)
        victims = []
        for inst in _candidates(on_node, requester, holders):
            victims.append(inst)
            cpu, memory = cpu + inst.cpu, memory + inst.memory
            if _fits(cpu, memory, need_cpu, need_memory):
                if best is None or len(victims) < len(best.victims):
                    best = Decision(node=room.node, victims=victims)
                break
    return best or Decision()


def _candidates(on_node: list[Instance], requester: str, holders: dict[str, Holder]) -> list[Instance]:
    warm = sorted((i for i in on_node if i.state in state.WARM_STATES and i.function != requester),
                  key=lambda i: (i.paused_at, i.created, i.id))
    spare = {name: h.spare for name, h in holders.items()}
    idle = []
    for inst in sorted((i for i in on_node if i.state == state.READY and i.function != requester),
                       key=lambda i: (holders[i.function].last_request if i.function in holders else 0.0,
                                      -i.created, i.id)):
        holder = holders.get(inst.function)
        if holder is None or holder.busy or spare.get(inst.function, 0) <= 0:
            continue
        spare[inst.function] -= 1
        idle.append(inst)
    return warm + idle

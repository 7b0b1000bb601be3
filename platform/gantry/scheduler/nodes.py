"""Node liveness as the scheduler sees it: live, suspect, dead.

A node is *live* while its worker's heartbeat key exists.  When the key expires the node is
*suspect*, not dead: a Redis blip or a worker restart stops heartbeats while every container
keeps serving, so for ``dead_after`` its instances keep their records (gateways keep routing
to the ones that answer; a restarted worker adopts them) and only new placements avoid it.
After that it is *dead*: its instances are reaped and replaced, its capacity record dropped,
and ``grace`` later the node itself is forgotten unless it came back.

``NodeWatch.observe`` is the decision (pure, exact for tests); the scheduler carries it out.
The clock is this leader's own: a new leader starts it afresh, which only errs on the side
of waiting longer.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NodeChanges:
    suspect: set[str] = field(default_factory=set)      # heartbeat stopped less than dead_after ago
    newly_suspect: list[str] = field(default_factory=list)
    newly_dead: list[str] = field(default_factory=list)  # crossed dead_after in this observation
    forget: list[str] = field(default_factory=list)      # dead for dead_after + grace


class NodeWatch:
    def __init__(self, dead_after: float, grace: float) -> None:
        self.dead_after, self.grace = dead_after, grace
        self._down_since: dict[str, float] = {}   # node id -> wall time its heartbeat was first missed
        self._dead: set[str] = set()

    def observe(self, known: list[str] | set[str], live: set[str], now: float) -> NodeChanges:
        """``known``: every registered node id; ``live``: those with a heartbeat now."""
        out = NodeChanges()
        for node_id in known:
            if node_id in live:
                self._down_since.pop(node_id, None)
                self._dead.discard(node_id)
                continue
            since = self._down_since.setdefault(node_id, now)
            if since == now and node_id not in self._dead:
                out.newly_suspect.append(node_id)
            age = now - since
            if age < self.dead_after:
                out.suspect.add(node_id)
            elif node_id not in self._dead:
                self._dead.add(node_id)
                out.newly_dead.append(node_id)
            elif age >= self.dead_after + self.grace:
                out.forget.append(node_id)
        for gone in set(self._down_since) - set(known):
            self._down_since.pop(gone, None)
            self._dead.discard(gone)
        return out

    def forgotten(self, node_id: str) -> None:
        self._down_since.pop(node_id, None)
        self._dead.discard(node_id)

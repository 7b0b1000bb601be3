"""The one owner of scaling decisions' Redis operations (keys.function_decisions and
keys.RECORD_DECISION): the scheduler leader writes each decision (and, when the target
changed, the memory autoscale.decide needs into the function record); the admin API reads
the last ones."""
from __future__ import annotations

import json
from typing import Any

from .. import keys
from ..store import Deposed, ScriptRunner
from .autoscale import Decision


def entry(now: float, previous: int, decision: Decision) -> dict[str, Any]:
    """One decision as the API answers it: time, from, to, reason (and the cooldown that
    held it, if one did)."""
    out = {"time": round(now, 3), "from": previous, "to": decision.target, "reason": decision.reason}
    if decision.held:
        out["held"] = decision.held
    return out


class DecisionStore(ScriptRunner):

    async def record(self, epoch: int, name: str, now: float, previous: int, decision: Decision) -> bool:
        """Append DECISION (and remember its target and times when it changed the target).
        False when the function is gone; raises Deposed when EPOCH is not the leader's."""
        m = decision.memory
        result = int(await self._run(keys.RECORD_DECISION,
                                     [keys.LEADER_EPOCH, keys.function(name), keys.function_decisions(name)],
                                     [epoch, json.dumps(entry(now, previous, decision)), keys.MAX_DECISIONS,
                                      "1" if decision.changed else "0", m.target, repr(m.up_at), repr(m.changed_at)]))
        if result == 0:
            raise Deposed(f"scaling decision for {name}")
        return result == 1

    async def last(self, name: str, limit: int = keys.MAX_DECISIONS) -> list[dict[str, Any]]:
        """The last LIMIT decisions, newest first (entries that cannot be read are skipped)."""
        out = []
        for raw in await self.redis.lrange(keys.function_decisions(name), 0, max(1, limit) - 1):
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

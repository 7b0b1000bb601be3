"""The one owner of schedule records' Redis operations (keys.schedule and the scripts of
gantry.keys's "schedules" section); the scheduler leader writes, the API reads."""
from __future__ import annotations

from typing import Any, Iterable

from .. import keys
from ..store import Deposed, ScriptRunner, Store
from ..manifest import FunctionSpec
from .schedules import Decision, Record


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def member(function: str, name: str) -> str:
    return f"{function} {name}"


async def active_spec(store: Store, function: str) -> FunctionSpec | None:
    """The spec of FUNCTION's active version (the one taking traffic; its schedules are the
    ones that run), None when it is not deployed.  Raises UnreadableRecord."""
    fn = await store.get_function(function)
    if fn is None:
        return None
    if fn.active == fn.latest:
        return fn.spec
    found = await store.get_version(function, fn.active)
    return found[1] if found is not None else fn.spec


class ScheduleStore(ScriptRunner):

    async def records(self, pairs: Iterable[tuple[str, str]]) -> list[Record]:
        """The records of these (function, schedule) pairs, in order (an absent one is empty)."""
        pairs = list(pairs)
        if not pairs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for function, name in pairs:
            pipe.hgetall(keys.schedule(function, name))
        return [Record.from_hash(raw) for raw in await pipe.execute()]

    async def claim(self, epoch: int, function: str, name: str, decided_from: int | None, decision: Decision,
                    invocation_id: str, sig: str) -> bool:
        """Move the mark as DECISION says (claiming its tick for INVOCATION_ID when it fires
        one).  False when the record moved on since it was read; raises Deposed when EPOCH is
        not the leader's."""
        result = int(await self._run(keys.SCHEDULE_CLAIM_TICK, [
            keys.LEADER_EPOCH, keys.schedule(function, name), keys.SCHEDULES],
            [epoch, "" if decided_from is None else decided_from, decision.mark,
             invocation_id if decision.fire is not None else "", decision.missed, decision.next, sig,
             member(function, name)]))
        if result == 0:
            raise Deposed(f"schedule {function}/{name}")
        return result == 1

    async def fired(self, function: str, name: str, tick: int, invocation_id: str) -> None:
        await self._run(keys.SCHEDULE_FIRED, [keys.schedule(function, name)], [tick, invocation_id])

    async def known(self) -> set[tuple[str, str]]:
        """Every (function, schedule) that has a record."""
        out = set()
        for raw in await self.redis.smembers(keys.SCHEDULES):
            function, _, name = _s(raw).partition(" ")
            out.add((function, name))
        return out

    async def forget(self, epoch: int, pairs: Iterable[tuple[str, str]]) -> None:
        """Delete these records (fenced: raises Deposed when EPOCH is not the leader's)."""
        pairs = sorted(pairs)
        if not pairs:
            return
        result = int(await self._run(keys.SCHEDULE_FORGET,
                                     [keys.LEADER_EPOCH, keys.SCHEDULES, *(keys.schedule(f, n) for f, n in pairs)],
                                     [epoch, *(member(f, n) for f, n in pairs)]))
        if result == 0:
            raise Deposed("schedule records")


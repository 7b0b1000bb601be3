"""The one owner of async invocations' Redis operations: every method is a script of
gantry.keys's "async invocations" section run by EVALSHA, or a plain read.  Callers (the
gateway's API and dispatcher, the scheduler's schedules) never build keys."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from redis.exceptions import ResponseError

from .. import keys
from ..manifest import AsyncPolicy
from ..store import ScriptRunner
from .model import PRIORITIES, Invocation, State, body_hash


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Submitted:
    """``outcome``: "created", "existing" (an Idempotency-Key seen before: ``id`` is the
    invocation it made) or "conflict" (that key was used with another body)."""
    outcome: str
    id: str


@dataclass(frozen=True)
class Claim:
    """keys.ASYNC_CLAIM's answer: ``action`` "settled", "expired", "run" or "resume", and for
    the last two the invocation as claimed."""
    action: str
    lease: int = 0
    attempts: int = 0
    instance: str = ""
    invocation: Invocation | None = None


@dataclass(frozen=True)
class Entry:
    """One stream entry a dispatcher read: which stream, its id, the invocation it names."""
    function: str
    priority: str
    entry_id: str
    invocation_id: str


class InvocationStore(ScriptRunner):

    # --- submit, read, cancel (the API) ------------------------------------------------------

    async def submit(self, invocation_id: str, function: str, tenant: str, policy: AsyncPolicy, body: bytes,
                     content_type: str, *, priority: str = "normal", idempotency_key: str = "",
                     idempotency_ttl: float = 0.0, callback_url: str = "", source: str = "api",
                     schedule: str = "", now: float | None = None) -> Submitted:
        now = time.time() if now is None else now
        digest = body_hash(body, content_type)
        fields: dict[str, Any] = {
            "id": invocation_id, "function": function, "tenant": tenant, "state": State.QUEUED.value,
            "priority": priority, "attempts": 0, "lease": 0, "max_retries": policy.max_retries,
            "created": repr(now), "updated": repr(now), "deadline": repr(now + policy.max_event_age),
            "body": body, "content_type": content_type, "body_hash": digest, "source": source}
        for name, value in (("idempotency_key", idempotency_key), ("callback_url", callback_url),
                            ("schedule", schedule)):
            if value:
                fields[name] = value
        if callback_url:
            fields["callback_state"] = "waiting"
        ttl_ms = int(idempotency_ttl * 1000) if idempotency_key else 0
        idem = keys.idempotency(tenant, function, idempotency_key) if idempotency_key else keys.idempotency("", "", "")
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        outcome, known = await self._run(keys.ASYNC_SUBMIT, [
            keys.invocation(invocation_id), keys.async_stream(function, priority), keys.ASYNC_FUNCTIONS, idem,
            keys.EVENTS],
            [invocation_id, function, digest, ttl_ms, keys.INVOCATION_PREFIX, keys.ASYNC_GROUP, *flat])
        return Submitted(_s(outcome), _s(known))

    async def get(self, invocation_id: str) -> Invocation | None:
        raw = await self.redis.hgetall(keys.invocation(invocation_id))
        return Invocation.from_hash(raw) if raw else None

    async def cancel(self, invocation_id: str, retention: float, now: float | None = None) -> str:
        """The state the invocation was in ("" if unknown); only queued or retrying ones change."""
        now = time.time() if now is None else now
        return _s(await self._run(keys.ASYNC_CANCEL, [keys.invocation(invocation_id), keys.ASYNC_DELAYED],
                                  [repr(now), int(retention)]))

    # --- dispatch ------------------------------------------------------------------------------

    async def functions(self) -> set[str]:
        return {_s(m) for m in await self.redis.smembers(keys.ASYNC_FUNCTIONS)}

    async def ensure_groups(self, function: str) -> None:
        for priority in PRIORITIES:
            try:
                await self.redis.xgroup_create(keys.async_stream(function, priority), keys.ASYNC_GROUP,
                                               id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @staticmethod
    def _entries(function: str, priority: str, rows: Iterable) -> list[Entry]:
        out = []
        for entry_id, fields in rows:
            if fields:   # an entry deleted while pending reads back without fields
                out.append(Entry(function, priority, _s(entry_id), _s(fields.get(b"id", fields.get("id")))))
        return out

    async def read(self, function: str, priority: str, consumer: str, count: int, own: bool = False) -> list[Entry]:
        """New entries for CONSUMER (or, with ``own``, those it already holds: after a restart)."""
        stream = keys.async_stream(function, priority)
        try:
            reply = await self.redis.xreadgroup(keys.ASYNC_GROUP, consumer, {stream: "0" if own else ">"}, count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups(function)     # the stream was removed (a flushed Redis): nothing to read
            return []
        return self._entries(function, priority, reply[0][1]) if reply else []

    async def reclaim(self, function: str, priority: str, consumer: str, min_idle: float, count: int) -> list[Entry]:
        """Entries whose holder has not beaten its heartbeat for MIN_IDLE seconds: it is gone."""
        stream = keys.async_stream(function, priority)
        try:
            reply = await self.redis.xautoclaim(stream, keys.ASYNC_GROUP, consumer, int(min_idle * 1000),
                                                start_id="0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups(function)
            return []
        claimed = self._entries(function, priority, reply[1])
        for gone in reply[2] if len(reply) > 2 else ():   # entries deleted while pending
            await self.redis.xack(stream, keys.ASYNC_GROUP, gone)
        return claimed

    async def pending(self, function: str) -> int:
        """Entries in FUNCTION's streams not yet settled (waiting or held): its queue depth."""
        total = 0
        for priority in PRIORITIES:
            total += await self.redis.xlen(keys.async_stream(function, priority))
        return total

    async def claim(self, entry: Entry, consumer: str, dlq_retention: float, now: float | None = None) -> Claim:
        now = time.time() if now is None else now
        reply = await self._run(keys.ASYNC_CLAIM, [
            keys.invocation(entry.invocation_id), keys.async_stream(entry.function, entry.priority), keys.ASYNC_DLQ],
            [consumer, repr(now), entry.entry_id, keys.ASYNC_GROUP, int(dlq_retention)])
        action = _s(reply[0])
        if action in ("settled", "expired"):
            return Claim(action)
        flat = reply[4]
        record = Invocation.from_hash({flat[i]: flat[i + 1] for i in range(0, len(flat), 2)})
        return Claim(action, int(reply[1]), int(reply[2]), _s(reply[3]), record)

    async def note(self, invocation_id: str, lease: int, **fields: Any) -> bool:
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        return bool(await self._run(keys.ASYNC_NOTE, [keys.invocation(invocation_id)], [lease, *flat]))

    async def heartbeat(self, consumer: str, held: list[tuple[Entry, int]]) -> list[str]:
        """Reset the idle time of every entry CONSUMER holds with its current lease; the ids
        of invocations whose claim was lost."""
        if not held:
            return []
        streams: dict[str, int] = {}
        args: list[Any] = [keys.ASYNC_GROUP, consumer, keys.INVOCATION_PREFIX]
        for entry, lease in held:
            stream = keys.async_stream(entry.function, entry.priority)
            index = streams.setdefault(stream, len(streams) + 1)
            args += [index, entry.entry_id, entry.invocation_id, lease]
        lost = await self._run(keys.ASYNC_HEARTBEAT, list(streams), args)
        return [_s(x) for x in lost]

    async def settle(self, entry: Entry, lease: int, state: State, retention: float, *, status: int | None = None,
                     result: bytes | None = None, result_type: str = "", error_code: str = "", error: str = "",
                     attempts: int | None = None, now: float | None = None) -> bool:
        """Store the outcome with LEASE; ``attempts`` corrects the count (an attempt that was
        claimed but never started)."""
        now = time.time() if now is None else now
        fields: list[Any] = [] if attempts is None else ["attempts", attempts]
        if status is not None:
            fields += ["status", status]
        if result is not None:
            fields += ["result", result, "result_type", result_type]
        if error_code:
            fields += ["error_code", error_code, "error", error]
        return bool(await self._run(keys.ASYNC_SETTLE, [
            keys.invocation(entry.invocation_id), keys.async_stream(entry.function, entry.priority),
            keys.ASYNC_DLQ, keys.ASYNC_CALLBACKS],
            [lease, state.value, repr(now), entry.entry_id, keys.ASYNC_GROUP, int(retention), *fields]))

    async def retry(self, entry: Entry, lease: int, due: float, *, status: int | None, error_code: str, error: str,
                    now: float | None = None) -> bool:
        now = time.time() if now is None else now
        fields: list[Any] = ["error_code", error_code, "error", error]
        if status is not None:
            fields += ["status", status]
        return bool(await self._run(keys.ASYNC_RETRY, [
            keys.invocation(entry.invocation_id), keys.async_stream(entry.function, entry.priority),
            keys.ASYNC_DELAYED], [lease, repr(due), repr(now), entry.entry_id, keys.ASYNC_GROUP, *fields]))

    async def move_due(self, now: float | None = None, limit: int = 500) -> int:
        now = time.time() if now is None else now
        stream_prefix = keys.async_stream("", "")[: -len("{}:")]
        return int(await self._run(keys.ASYNC_MOVE_DUE, [keys.ASYNC_DELAYED],
                                   [repr(now), keys.INVOCATION_PREFIX, stream_prefix, limit]))

    # --- dead letters ---------------------------------------------------------------------------

    async def dead_letters(self, start: float = 0.0, limit: int = 100) -> list[tuple[str, float]]:
        """(invocation id, when it went dead), oldest first, from time START on."""
        rows = await self.redis.zrangebyscore(keys.ASYNC_DLQ, start, "+inf", start=0, num=limit, withscores=True)
        return [(_s(m), float(score)) for m, score in rows]

    async def forget_dead(self, invocation_id: str) -> None:
        await self.redis.zrem(keys.ASYNC_DLQ, invocation_id)

    async def replay(self, inv: Invocation, max_event_age: float, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return _s(await self._run(keys.ASYNC_REPLAY, [
            keys.invocation(inv.id), keys.async_stream(inv.function, inv.priority), keys.ASYNC_DLQ, keys.EVENTS],
            [repr(now), repr(now + max_event_age), keys.ASYNC_GROUP]))

    async def purge(self, invocation_id: str) -> bool:
        """Drop a dead letter and its record."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.ASYNC_DLQ, invocation_id)
            pipe.delete(keys.invocation(invocation_id))
            removed, _ = await pipe.execute()
        return bool(removed)

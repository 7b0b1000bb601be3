"""The one owner of the coordination primitives' Redis operations (as gantry.store is of the
control plane's): every lock, state, queue and service operation of the /v1/coord API is a
method here, each a script of gantry.keys's "coordination" section run by EVALSHA, or a plain
read.  Callers (gantry.gateway.coord_api) pass a namespace and names; they never build keys.

Values cross this layer as JSON text: the store neither parses nor checks them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import keys
from ..store import ScriptRunner

LOG_MAXLEN = 10_000        # revisions kept per namespace for watchers (about; MAXLEN ~)
WAITER_KEEPALIVE_MS = 3000 # a lock waiter that does not ask again within this is dropped


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Grant:
    """The outcome of one acquire: ``token`` > 0 when granted; else the lease's remaining ms
    (0: free but another waiter's turn) and the caller's place in the queue (-1: not queued)."""
    token: int
    pttl: int = 0
    position: int = -1


@dataclass(frozen=True)
class Written:
    """A state write: ``status`` 1 applied (``revision``, ``value`` JSON), 0 missing key
    (delete), -1 stale fence, -2 revision mismatch (``revision`` is the current one), -3 not an
    integer (incr)."""
    status: int
    revision: int = 0
    value: str = ""


@dataclass(frozen=True)
class Change:
    revision: int
    key: str
    op: str
    value: str       # JSON text ("" for del; the holder for a lock grant or release)
    token: int       # lock events: the grant's fencing token


@dataclass(frozen=True)
class Delivery:
    id: int
    value: str
    delivery: int    # 1 for the first delivery: the receipt an ack or nack must name
    deadline_ms: int # Redis time after which an unacked item is delivered again


class CoordStore(ScriptRunner):
    def __init__(self, redis, log_maxlen: int = LOG_MAXLEN) -> None:
        super().__init__(redis)
        self.log_maxlen = int(log_maxlen)

    # --- locks ---------------------------------------------------------------------------

    async def lock_acquire(self, ns: str, name: str, holder: str, lease_ms: int, wait: bool) -> Grant:
        out = await self._run(keys.COORD_LOCK_ACQUIRE,
                              [keys.coord_lock(ns, name), keys.coord_lock_fence(ns, name),
                               keys.coord_lock_waiters(ns, name), keys.coord_lock_alive(ns, name),
                               keys.coord_lock_seq(ns, name), keys.coord_revision(ns), keys.coord_log(ns)],
                              [holder, int(lease_ms), "wait" if wait else "try", WAITER_KEEPALIVE_MS,
                               self.log_maxlen, name])
        if int(out[0]) == 1:
            return Grant(int(out[1]))
        return Grant(0, int(out[1]), int(out[2]))

    async def lock_wait(self, ns: str, name: str, holder: str, seconds: float) -> bool:
        """Block up to ``seconds`` for a wake-up addressed to this waiter (True if woken)."""
        got = await self.redis.blpop([keys.coord_lock_wake(ns, name, holder)], timeout=max(0.01, seconds))
        return got is not None

    async def lock_leave(self, ns: str, name: str, holder: str) -> None:
        """Leave the queue of waiters (a waiter that gave up), so the next one is not held up."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(keys.coord_lock_waiters(ns, name), holder)
        pipe.zrem(keys.coord_lock_alive(ns, name), holder)
        pipe.delete(keys.coord_lock_wake(ns, name, holder))
        await pipe.execute()

    async def lock_renew(self, ns: str, name: str, holder: str, token: int, lease_ms: int) -> bool:
        return bool(await self._run(keys.COORD_LOCK_RENEW, [keys.coord_lock(ns, name)],
                                    [holder, str(token), int(lease_ms)]))

    async def lock_release(self, ns: str, name: str, holder: str, token: int) -> bool:
        """Release if held with this grant, and wake the waiter now at the head of the queue."""
        released, head = await self._run(
            keys.COORD_LOCK_RELEASE,
            [keys.coord_lock(ns, name), keys.coord_lock_waiters(ns, name), keys.coord_lock_alive(ns, name),
             keys.coord_revision(ns), keys.coord_log(ns)],
            [holder, str(token), self.log_maxlen, name])
        head = _text(head)
        if head:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(keys.coord_lock_wake(ns, name, head), "1")
            pipe.pexpire(keys.coord_lock_wake(ns, name, head), WAITER_KEEPALIVE_MS * 2)
            await pipe.execute()
        return bool(int(released))

    async def lock_info(self, ns: str, name: str) -> tuple[str, int, int] | None:
        """(holder, token, remaining lease ms) of a held lock; None when free."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hmget(keys.coord_lock(ns, name), "holder", "token")
        pipe.pttl(keys.coord_lock(ns, name))
        (holder, token), pttl = await pipe.execute()
        if holder is None or token is None:
            return None
        return _text(holder), int(token), max(0, int(pttl))

    # --- state ---------------------------------------------------------------------------

    async def state_get(self, ns: str, key: str) -> tuple[str, int] | None:
        """(value JSON, revision that last changed it), or None."""
        value, rev = await self._run(keys.COORD_STATE_GET, [keys.coord_state(ns), keys.coord_state_rev(ns)], [key])
        return None if value is None else (_text(value), int(rev or 0))

    async def state_write(self, ns: str, key: str, op: str, value: str, expect: int | None = None,
                          fence: tuple[str, int] | None = None) -> Written:
        """op "set" (value JSON), "incr" (value: an integer delta) or "del"; with ``expect``
        only if the key's revision is that (0: absent); with ``fence`` (lock, token) only
        while that lock is held with that token."""
        lock_key = keys.coord_lock(ns, fence[0]) if fence else keys.coord_revision(ns)
        out = await self._run(keys.COORD_STATE_WRITE,
                              [keys.coord_state(ns), keys.coord_state_rev(ns), keys.coord_revision(ns),
                               keys.coord_log(ns), lock_key],
                              [key, op, value, "" if expect is None else str(int(expect)),
                               str(fence[1]) if fence else "", self.log_maxlen])
        status = int(out[0])
        if status == 1:
            return Written(1, int(out[1]), _text(out[2]))
        return Written(status, int(out[1]) if len(out) > 1 else 0)

    async def state_list(self, ns: str, prefix: str, limit: int) -> tuple[int, list[tuple[str, str, int]]]:
        """(namespace revision, [(key, value JSON, revision)]) in one consistent read."""
        rev, flat = await self._run(keys.COORD_STATE_LIST,
                                    [keys.coord_state(ns), keys.coord_state_rev(ns), keys.coord_revision(ns)],
                                    [prefix, int(limit)])
        items = [(_text(flat[i]), _text(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
        return int(rev), items

    async def revision(self, ns: str) -> int:
        return int(await self.redis.get(keys.coord_revision(ns)) or 0)

    async def changes(self, ns: str, after: int, count: int, block_ms: int = 0) -> list[Change]:
        """Log entries with revisions above ``after``, oldest first; with ``block_ms`` waits
        that long for the first when there is none yet."""
        if block_ms > 0:
            got = await self.redis.xread({keys.coord_log(ns): f"{after}-1"}, count=count, block=block_ms)
            raw = got[0][1] if got else []
        else:
            raw = await self.redis.xrange(keys.coord_log(ns), min=f"({after}-1", max="+", count=count)
        return [_change(entry_id, fields) for entry_id, fields in raw]

    async def oldest_revision(self, ns: str) -> int:
        """The oldest revision the log still holds (0 when empty)."""
        first = await self.redis.xrange(keys.coord_log(ns), min="-", max="+", count=1)
        return int(_text(first[0][0]).split("-")[0]) if first else 0

    # --- queues --------------------------------------------------------------------------

    async def queue_put(self, ns: str, name: str, value: str, priority: int) -> int:
        return int(await self._run(keys.COORD_QUEUE_PUT,
                                   [keys.coord_queue(ns, name), keys.coord_queue_items(ns, name),
                                    keys.coord_queue_meta(ns, name), keys.coord_queue_seq(ns, name),
                                    keys.coord_queue_wake(ns, name)],
                                   [value, int(priority)]))

    async def queue_get(self, ns: str, name: str, dead: str, visibility_ms: int, max_deliveries: int) -> Delivery | None:
        out = await self._run(keys.COORD_QUEUE_GET,
                              [keys.coord_queue(ns, name), keys.coord_queue_items(ns, name),
                               keys.coord_queue_meta(ns, name), keys.coord_queue_inflight(ns, name),
                               keys.coord_queue(ns, dead), keys.coord_queue_items(ns, dead),
                               keys.coord_queue_meta(ns, dead), keys.coord_queue_seq(ns, dead)],
                              [int(visibility_ms), int(max_deliveries)])
        if not out:
            return None
        return Delivery(int(out[0]), _text(out[1]), int(out[2]), int(out[3]))

    async def queue_wait(self, ns: str, name: str, seconds: float) -> bool:
        """Block up to ``seconds`` for a put's wake-up token (True if one came)."""
        return await self.redis.blpop([keys.coord_queue_wake(ns, name)], timeout=max(0.01, seconds)) is not None

    async def queue_settle(self, ns: str, name: str, item: int, delivery: int, ack: bool,
                           fence: tuple[str, int] | None = None, delay_ms: int = 0) -> int:
        """1 done, 0 stale receipt (redelivered or settled since), -1 stale fence."""
        lock_key = keys.coord_lock(ns, fence[0]) if fence else keys.coord_revision(ns)
        return int(await self._run(keys.COORD_QUEUE_SETTLE,
                                   [keys.coord_queue_items(ns, name), keys.coord_queue_meta(ns, name),
                                    keys.coord_queue_inflight(ns, name), lock_key],
                                   [str(item), str(delivery), "ack" if ack else "nack",
                                    str(fence[1]) if fence else "", int(delay_ms)]))

    async def queue_depth(self, ns: str, name: str) -> tuple[int, int]:
        """(ready, delivered and not yet settled)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcard(keys.coord_queue(ns, name))
        pipe.zcard(keys.coord_queue_inflight(ns, name))
        ready, inflight = await pipe.execute()
        return int(ready), int(inflight)

    # --- services ------------------------------------------------------------------------

    async def service_put(self, ns: str, name: str, instance: str, ttl_ms: int, info: str = "") -> bool:
        """Register (``info`` JSON) or, with no info, heartbeat; False: not registered (expired)."""
        return bool(await self._run(keys.COORD_SERVICE_PUT,
                                    [keys.coord_service(ns, name), keys.coord_service_info(ns, name)],
                                    [instance, int(ttl_ms), info]))

    async def service_list(self, ns: str, name: str) -> list[tuple[str, str, int]]:
        """[(instance, info JSON, expiry ms)] of the live instances (expired ones are dropped)."""
        flat = await self._run(keys.COORD_SERVICE_LIST,
                               [keys.coord_service(ns, name), keys.coord_service_info(ns, name)], [])
        return [(_text(flat[i]), _text(flat[i + 1]), int(float(flat[i + 2]))) for i in range(0, len(flat), 3)]

    async def service_delete(self, ns: str, name: str, instance: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(keys.coord_service(ns, name), instance)
        pipe.hdel(keys.coord_service_info(ns, name), instance)
        removed, _ = await pipe.execute()
        return bool(removed)


def _change(entry_id: Any, fields: dict) -> Change:
    f = {_text(k): _text(v) for k, v in fields.items()}
    return Change(int(_text(entry_id).split("-")[0]), f.get("k", ""), f.get("op", ""), f.get("v", ""),
                  int(f.get("t") or 0))

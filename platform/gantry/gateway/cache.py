"""The gateway's local view of functions and their ready instances.

One ``Entry`` per function name that requests asked for.  It is refreshed from Redis when a
pub/sub hint names it (``fn:NAME``, ``inst:NAME`` on keys.EVENTS), when a waiting request
polls (every 100 ms), and by the periodic full refresh, so a lost message only delays.
Refreshes of one entry are coalesced: at most one runs, and a request that arrives meanwhile
makes it run once more.  Versions are immutable, so their specs are cached for good.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..cancellation import raise_if_cancelled
from .. import keys, state
from ..manifest import NAME_RE, FunctionSpec
from ..store import Store
from .balancer import Balancer, Ticket
from .errors import ApiError

log = logging.getLogger("gantry.gateway")


class Signal:
    """Wake every waiter: ``notify`` sets the current event and starts a new one."""

    __slots__ = ("_ev",)

    def __init__(self) -> None:
        self._ev = asyncio.Event()

    def notify(self) -> None:
        self._ev.set()
        self._ev = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        ev = self._ev
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await ev.wait()
            return True
        except TimeoutError:
            return False


@dataclass
class Active:
    """What routing needs from the function's active version."""
    version: int
    image: str
    spec: FunctionSpec


class Entry:
    def __init__(self, name: str) -> None:
        self.name = name
        self.exists = False
        self.active: Active | None = None
        self.balancer = Balancer()
        self.changed = Signal()
        self.fetched = 0.0            # monotonic time of the last completed refresh (0: never)
        self.error: Exception | None = None   # why the last refresh failed
        self.versions: dict[int, tuple[str, FunctionSpec]] = {}
        self._task: asyncio.Task | None = None
        self._dirty = False
        # load, reported to keys.function_load by the LoadReporter
        self.inflight = 0
        self.waiting = 0
        self.last_request = 0.0       # wall time
        self.demand_signalled = 0.0   # monotonic

    def release(self, ticket: Ticket) -> None:
        self.balancer.release(ticket)
        self.changed.notify()


class FunctionCache:
    def __init__(self, redis, negative_ttl: float = 1.0) -> None:
        self.redis = redis
        self.store = Store(redis)
        self.negative_ttl = negative_ttl
        self.entries: dict[str, Entry] = {}
        self._closed = False

    async def get(self, name: str) -> Entry | None:
        """The entry of a deployed function, or None if there is no such function."""
        if not NAME_RE.match(name):
            return None
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = Entry(name)
        if entry.fetched == 0.0 or (not entry.exists and time.monotonic() - entry.fetched > self.negative_ttl):
            await asyncio.shield(self.refresh(entry))
            if entry.fetched == 0.0:
                raise ApiError(503, "unavailable", "the gateway cannot read the function registry; retry shortly",
                               {"Retry-After": "1"})
        return entry if entry.exists else None

    def refresh(self, entry: Entry) -> asyncio.Task:
        """Start (or re-arm) the entry's refresh; the task ends once no request is pending."""
        if self._task_running(entry):
            entry._dirty = True
            return entry._task  # type: ignore[return-value]
        entry._task = asyncio.create_task(self._refresh_loop(entry), name=f"gantry-cache-{entry.name}")
        return entry._task

    def refresh_name(self, name: str) -> None:
        entry = self.entries.get(name)
        if entry is not None:
            self.refresh(entry)

    @staticmethod
    def _task_running(entry: Entry) -> bool:
        return entry._task is not None and not entry._task.done()

    async def refresh_all(self) -> None:
        now = time.monotonic()
        for name, entry in list(self.entries.items()):
            # forget unknown names once their negative answer is stale and nobody waits
            if (not entry.exists and entry.waiting == 0 and entry.inflight == 0
                    and now - entry.fetched > self.negative_ttl and not self._task_running(entry)):
                del self.entries[name]
        tasks = [self.refresh(e) for e in self.entries.values()]
        if tasks:
            await asyncio.wait(tasks)

    async def _refresh_loop(self, entry: Entry) -> None:
        while not self._closed:
            entry._dirty = False
            try:
                await self._fetch(entry)
            except Exception as exc:  # Redis trouble: keep the old view, the next refresh retries
                log.warning("cache refresh failed", extra={"function": entry.name, "error": repr(exc)})
                entry.error = exc
                return
            entry.error = None
            if not entry._dirty:
                return

    async def _fetch(self, entry: Entry) -> None:
        r = self.redis
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(keys.function(entry.name))
        pipe.smembers(keys.function_instances(entry.name))
        raw, ids = await pipe.execute()
        if not raw or b"active" not in raw and b"latest" not in raw:
            entry.exists, entry.active = False, None
            entry.versions.clear()
            entry.balancer.update([], entry.balancer.capacity)
        else:
            version = int(raw.get(b"active") or raw[b"latest"])
            found = entry.versions.get(version)
            if found is None:
                found = await self.store.get_version(entry.name, version)
                if found is not None:
                    entry.versions[version] = found
            if found is None:  # half-written or half-deleted: treat as absent for now
                entry.exists, entry.active = False, None
                entry.balancer.update([], entry.balancer.capacity)
            else:
                image, spec = found
                entry.exists = True
                entry.active = Active(version, image, spec)
                instances = await self.store.get_instances(ids)
                ready = [i for i in instances if i.state == state.READY and i.version == version
                         and i.host and i.port]
                entry.balancer.update(ready, spec.scaling.concurrency)
        entry.fetched = time.monotonic()
        entry.changed.notify()

    async def close(self) -> None:
        self._closed = True
        tasks = [e._task for e in self.entries.values() if self._task_running(e)]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def on_event(self, message: str) -> None:
        """A pub/sub hint from keys.EVENTS."""
        kind, _, name = message.partition(":")
        if kind in ("fn", "inst"):
            self.refresh_name(name)


async def listen_events(redis, cache: FunctionCache, on_reconnect=None) -> None:
    """Follow keys.EVENTS until cancelled; resubscribe (and refresh everything) after errors."""
    backoff = 0.1
    while True:
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as ps:
                await ps.subscribe(keys.EVENTS)
                backoff = 0.1
                if on_reconnect is not None:
                    await on_reconnect()
                raise_if_cancelled()
                while True:
                    msg = await ps.get_message(timeout=1.0)
                    raise_if_cancelled()
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = msg["data"]
                    cache.on_event(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelled()
            log.warning("event subscription failed; retrying", extra={"error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


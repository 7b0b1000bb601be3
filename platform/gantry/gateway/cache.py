"""The gateway's local view of functions and their ready instances.

One ``Entry`` per function name that requests asked for, split by concern: ``Known`` (what
the cache knows of the function), ``Routing`` (its balancer and change signal) and
gateway.load's ``Load`` (this gateway's load on it).  It is refreshed from Redis when a
pub/sub hint names it (``fn:NAME``, ``inst:NAME`` on keys.EVENTS), when a waiting request
polls (every 100 ms), and by the periodic full refresh, so a lost message only delays.
Refreshes of one entry are coalesced: at most one runs, and a request that arrives meanwhile
makes it run once more.  Versions are immutable, so their specs are cached for good.

While Redis cannot be reached the cache keeps its last view: a function with ready
instances here keeps being served; one without (or one this gateway has not seen) is
answered 503 ``unavailable`` at once rather than after the cold-start wait, since no
instance could be started or learnt of meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from ..cancellation import raise_if_cancelled
from .. import keys, state
from ..manifest import QUALIFIED_RE, FunctionSpec
from ..store import StartFailure, Store
from ..tenants.model import split
from ..tenants.quota import QuotaExceeded
from .balancer import Balancer, Ticket
from .errors import ApiError
from .load import Load

log = logging.getLogger("gantry.gateway")

# what a refresh fails with when Redis is down or restarting (not a bad record)
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _unavailable(what: str) -> ApiError:
    return ApiError(503, "unavailable", f"{what}; retry shortly", {"Retry-After": "1"})


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


class Known:
    """What the cache knows of the function, and the state of refreshing it from Redis."""

    __slots__ = ("exists", "active", "versions", "fetched", "error", "task", "dirty", "pending_reason",
                 "start_failed", "pending_quota")

    def __init__(self) -> None:
        self.exists = False
        self.active: Active | None = None
        self.versions: dict[int, tuple[str, FunctionSpec]] = {}   # immutable: kept for good
        self.fetched = 0.0            # monotonic time of the last completed refresh (0: never)
        self.error: Exception | None = None   # why the last refresh failed
        self.task: asyncio.Task | None = None  # the refresh running now, if any
        self.dirty = False            # asked for again while it ran: it runs once more
        self.pending_reason = ""      # the scheduler's word on why wanted instances wait
        self.start_failed: StartFailure | None = None   # the last failed start, until one succeeds
        # the tenant quota that keeps wanted instances from starting (scheduler's pending_quota)
        self.pending_quota: QuotaExceeded | None = None

    def start_failure(self) -> str:
        """Why the version that takes traffic failed to start ("" unless its last start
        failed): a request waiting for it is answered 502 function_start_failed at once."""
        failed, active = self.start_failed, self.active
        if failed is None or active is None or failed.version != active.version:
            return ""
        return failed.cause

    def refreshing(self) -> bool:
        return self.task is not None and not self.task.done()

    def unreachable(self) -> bool:
        """Whether the last refresh failed because Redis could not be reached."""
        return isinstance(self.error, _UNREACHABLE)


class Routing:
    """Where the function's requests go: the balancer over its ready instances, and the
    signal that wakes waiting requests when a slot may have come free (a refresh, a release)."""

    __slots__ = ("balancer", "changed")

    def __init__(self) -> None:
        self.balancer = Balancer()
        self.changed = Signal()

    def release(self, ticket: Ticket) -> None:
        self.balancer.release(ticket)
        self.changed.notify()


class Entry:
    """One function name that requests asked for, by concern: what the cache knows of it,
    how its requests are routed, and this gateway's load on it."""

    __slots__ = ("name", "known", "routing", "load")

    def __init__(self, name: str) -> None:
        self.name = name
        self.known = Known()
        self.routing = Routing()
        self.load = Load()


class FunctionCache:
    def __init__(self, store: Store, negative_ttl: float = 1.0) -> None:
        self.store = store
        self.negative_ttl = negative_ttl
        self.entries: dict[str, Entry] = {}
        self._closed = False

    async def get(self, name: str) -> Entry | None:
        """The entry of a deployed function, or None if there is no such function."""
        if not QUALIFIED_RE.match(name):
            return None
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = Entry(name)
        known = entry.known
        if known.fetched == 0.0 or (not known.exists and time.monotonic() - known.fetched > self.negative_ttl):
            await asyncio.shield(self.refresh(entry))
            if known.fetched == 0.0 or (not known.exists and known.error is not None):
                raise _unavailable("the gateway cannot read the function registry")
        if not known.exists:
            return None
        if known.unreachable() and not entry.routing.balancer.ready:
            await asyncio.shield(self.refresh(entry))   # Redis may be back: one try (fails fast if not)
            self.raise_if_unreachable(entry)
        return entry

    def raise_if_unreachable(self, entry: Entry) -> None:
        """503 ``unavailable`` when Redis is unreachable and the function has no ready
        instance here: waiting could not help (no start can be ordered or seen).  With a
        ready instance the request goes on to it from the cached view."""
        if entry.known.unreachable() and not entry.routing.balancer.ready:
            raise _unavailable(f"no instance of {entry.name!r} is ready and Redis cannot be reached")

    def refresh(self, entry: Entry) -> asyncio.Task:
        """Start (or re-arm) the entry's refresh; the task ends once no request is pending."""
        known = entry.known
        if known.refreshing():
            known.dirty = True
            return known.task  # type: ignore[return-value]
        known.task = asyncio.create_task(self._refresh_loop(entry), name=f"gantry-cache-{entry.name}")
        return known.task

    def refresh_name(self, name: str) -> None:
        entry = self.entries.get(name)
        if entry is not None:
            self.refresh(entry)

    async def refresh_all(self) -> None:
        now = time.monotonic()
        for name, entry in list(self.entries.items()):
            # forget unknown names once their negative answer is stale and nobody waits
            known, load = entry.known, entry.load
            if (not known.exists and not load.busy()
                    and now - known.fetched > self.negative_ttl and not known.refreshing()):
                del self.entries[name]
        tasks = [self.refresh(e) for e in self.entries.values()]
        if tasks:
            await asyncio.wait(tasks)

    async def _refresh_loop(self, entry: Entry) -> None:
        known = entry.known
        while not self._closed:
            known.dirty = False
            try:
                await self._fetch(entry)
            except Exception as exc:  # Redis trouble: keep the old view, the next refresh retries
                log.warning("cache refresh failed", extra={"function": entry.name, "error": repr(exc)})
                known.error = exc
                return
            known.error = None
            if not known.dirty:
                return

    async def _fetch(self, entry: Entry) -> None:
        known, balancer = entry.known, entry.routing.balancer
        view = await self.store.routing_view(entry.name)
        version, ids, known.pending_reason, known.start_failed = view[:4]
        known.pending_quota = QuotaExceeded.decode(split(entry.name)[0], view.pending_quota)
        if version is None:
            known.exists, known.active = False, None
            known.versions.clear()
            balancer.update([], balancer.capacity)
        else:
            found = known.versions.get(version)
            if found is None:
                found = await self.store.get_version(entry.name, version)
                if found is not None:
                    known.versions[version] = found
            if found is None:  # half-written or half-deleted: treat as absent for now
                known.exists, known.active = False, None
                balancer.update([], balancer.capacity)
            else:
                image, spec = found
                known.exists = True
                known.active = Active(version, image, spec)
                instances = await self.store.get_instances(ids)
                ready = [i for i in instances if i.state == state.READY and i.version == version
                         and i.host and i.port]
                balancer.update(ready, spec.scaling.concurrency)
        known.fetched = time.monotonic()
        entry.routing.changed.notify()

    async def close(self) -> None:
        self._closed = True
        tasks = [e.known.task for e in self.entries.values() if e.known.refreshing()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def on_event(self, message: str) -> None:
        """A pub/sub hint from keys.EVENTS."""
        kind, _, name = message.partition(":")
        if kind in ("fn", "inst"):
            self.refresh_name(name)


async def listen_events(store: Store, on_event: Callable[[str], None], on_reconnect=None) -> None:
    """Follow keys.EVENTS until cancelled, handing each message to ``on_event``; resubscribe
    (and call ``on_reconnect``: refresh everything) after errors."""
    backoff = 0.1
    while True:
        try:
            async with store.events() as ps:
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
                    on_event(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelled()
            log.warning("event subscription failed; retrying", extra={"error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


"""Coordination for functions: the client of the gateway's /v1/coord API, and the function's
coordination token (made by the worker, checked by the gateway: the contract written once).

    from gantry.coord import Coord            # or gantry_runtime.coord, inside a function: ctx.coord
    coord = Coord("http://127.0.0.1:8000", key)
    with coord.lock("conv/42", ttl=10, timeout=30) as lk:
        state = coord.get_state("conv/42") or {}
        coord.set_state("conv/42", {**state, "turns": state.get("turns", 0) + 1}, fence=lk)
        coord.put("followups", {"conversation": 42})

``Coord`` is synchronous (stdlib ``http.client``, one keep-alive connection per thread),
``AsyncCoord`` the same API for asyncio (aiohttp, which the runtime image carries for it; the
runtime itself serves without it and imports it only here, on first use).  Every name
lives in the caller's namespace (its key's; a function's is its owner's).

Locks are safe, not only exclusive: each grant carries a fencing token that only grows, a
held lock renews its lease in the background, ``lost`` turns true (and ``on_lost`` is called)
as soon as a renewal is refused, and a write passed ``fence=lock`` is refused by the gateway
(``FenceError``) unless the lock is still held with exactly that grant.  Waiting for a lock
is first come, first served, and bounded by ``timeout``.

Standard library only at import: the runtime imports this inside the container.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Iterator

from .wire import parse_error

# -- the function's credential ---------------------------------------------------------------

COORD_URL_ENV = "GANTRY_COORD_URL"       # the gateway as the container reaches it
COORD_TOKEN_ENV = "GANTRY_COORD_TOKEN"   # the instance's coordination token
TOKEN_PREFIX = "gct1."


def coord_token(instance_id: str, instance_key: str) -> str:
    """The instance's coordination token: its id and an HMAC of it under the instance's key.
    The gateway checks it against the instance record (which holds the key), so it is good
    exactly while the instance exists and runs, and says nothing of the key itself (which
    would let its holder invoke the instance)."""
    mac = hmac.new(instance_key.encode(), b"gantry-coord-v1:" + instance_id.encode(), hashlib.sha256).digest()
    return TOKEN_PREFIX + instance_id + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_instance(token: str) -> str | None:
    """The instance id a coordination token names (unchecked); None if it is not one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    instance, dot, mac = token[len(TOKEN_PREFIX):].rpartition(".")
    return instance if dot and instance and mac else None


def token_matches(token: str, instance_id: str, instance_key: str) -> bool:
    return bool(instance_key) and hmac.compare_digest(coord_token(instance_id, instance_key).encode(),
                                                      token.encode("utf-8", "surrogateescape"))


# -- errors ----------------------------------------------------------------------------------

class CoordCode(StrEnum):
    """``error.code`` values of the /v1/coord API (the gateway answers these)."""

    FENCE_STALE = "fence_stale"             # 409: the lock is no longer held with that token
    LOCK_LOST = "lock_lost"                 # 409: a renew or release of a lease that is gone
    RECEIPT_STALE = "receipt_stale"         # 409: ack/nack of a delivery redelivered or settled since
    VERSION_MISMATCH = "version_mismatch"   # 409: compare-and-swap lost
    NOT_AN_INTEGER = "not_an_integer"       # 409: increment of a value that is not one
    REVISION_COMPACTED = "revision_compacted"  # 410: watch from a revision no longer in the log


class CoordError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class FenceError(CoordError):
    """The write carried a fencing token that is no longer current: you lost the lock."""


class VersionMismatch(CoordError):
    """compare_and_swap lost: the key changed since the revision given."""


class Compacted(CoordError):
    """The revision to watch from is gone from the log: read the state again, watch from there."""


class LockTimeout(CoordError, TimeoutError):
    """The lock was not granted within the timeout."""


def _error(status: int, body: bytes) -> CoordError:
    code, message = parse_error(body) or ("http_" + str(status), body[:200].decode("utf-8", "replace"))
    if code in (CoordCode.FENCE_STALE, CoordCode.LOCK_LOST, CoordCode.RECEIPT_STALE):
        return FenceError(status, code, message)
    if code == CoordCode.VERSION_MISMATCH:
        return VersionMismatch(status, code, message)
    if code == CoordCode.REVISION_COMPACTED:
        return Compacted(status, code, message)
    return CoordError(status, code, message)


# -- records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    revision: int      # the namespace revision that last changed it (compare_and_swap's version)


@dataclass(frozen=True)
class Change:
    revision: int
    key: str
    op: str            # "set", "del", "incr"; for "@lock/NAME": "grant", "release"
    value: Any         # None for del; the holder for lock events
    token: int = 0     # lock events: the grant's fencing token


@dataclass(frozen=True)
class Item:
    queue: str
    id: int
    value: Any
    delivery: int      # 1 on first delivery; the receipt ack and nack name
    deadline_ms: int = 0  # Redis time (ms) after which it is delivered again unless acked


@dataclass(frozen=True)
class ServiceInstance:
    id: str
    address: str
    port: int
    metadata: dict
    weight: int


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="/")


def _fence(fence: Any) -> dict | None:
    """A Lock (or AsyncLock), a (name, token) pair, or None."""
    if fence is None:
        return None
    if isinstance(fence, tuple):
        return {"lock": fence[0], "token": int(fence[1])}
    return {"lock": fence.name, "token": fence.token}


def _entry(d: dict | None) -> Entry | None:
    return None if d is None else Entry(d["key"], d["value"], d["revision"])


def _changes(d: dict) -> tuple[list[Change], int]:
    return [Change(e["revision"], e["key"], e["op"], e.get("value"), e.get("token", 0))
            for e in d["events"]], d["revision"]


def _item(queue: str, d: dict) -> Item | None:
    it = d.get("item")
    return None if it is None else Item(queue, it["id"], it["value"], it["delivery"], it.get("deadline_ms", 0))


def _service(d: dict) -> ServiceInstance:
    return ServiceInstance(d["id"], d["address"], d["port"], d.get("metadata") or {}, d.get("weight", 1))


_LONG_POLL_MARGIN = 10.0   # seconds a long poll's HTTP timeout allows beyond its wait


class _Api:
    """Every call of the API once, for both clients: ``_do`` returns the decoded answer in
    ``Coord`` and an awaitable of it in ``AsyncCoord``.  ``none_on`` (an error code) answers decode(None)."""

    def _do(self, method: str, path: str, body: Any = None, decode: Callable = lambda d: d,
            none_on: str | None = None, wait: float = 0.0) -> Any:
        raise NotImplementedError

    # state
    def get_state(self, key: str, default: Any = None) -> Any:
        return self._do("GET", f"/v1/coord/state/{_q(key)}",
                        decode=lambda d: default if d is None else d["value"], none_on="not_found")

    def get_entry(self, key: str) -> Any:
        """The Entry (value and revision) of the key, or None."""
        return self._do("GET", f"/v1/coord/state/{_q(key)}", decode=_entry, none_on="not_found")

    def set_state(self, key: str, value: Any, *, expect_revision: int | None = None, fence: Any = None) -> Any:
        """Set the key; returns its new revision.  ``expect_revision`` (0: must not exist)
        makes it a compare-and-swap (VersionMismatch); ``fence`` a lock that must still be held."""
        return self._do("PUT", f"/v1/coord/state/{_q(key)}",
                        {"value": value, "expect_revision": expect_revision, "fence": _fence(fence)},
                        decode=lambda d: d["revision"])

    def compare_and_swap(self, key: str, expect_revision: int, value: Any, *, fence: Any = None) -> Any:
        """True if the key was still at ``expect_revision`` (0: absent) and is now ``value``."""
        return self._do("PUT", f"/v1/coord/state/{_q(key)}",
                        {"value": value, "expect_revision": expect_revision, "fence": _fence(fence)},
                        decode=lambda d: d is not None, none_on=CoordCode.VERSION_MISMATCH)

    def delete_state(self, key: str, *, expect_revision: int | None = None, fence: Any = None) -> Any:
        return self._do("DELETE", f"/v1/coord/state/{_q(key)}",
                        {"expect_revision": expect_revision, "fence": _fence(fence)},
                        decode=lambda d: d is not None, none_on="not_found")

    def atomic_increment(self, key: str, delta: int = 1, *, fence: Any = None) -> Any:
        """Add ``delta`` to an integer value (absent: 0); returns the new value."""
        return self._do("POST", f"/v1/coord/incr/{_q(key)}", {"delta": int(delta), "fence": _fence(fence)},
                        decode=lambda d: d["value"])

    def list_state(self, prefix: str = "", limit: int = 1000) -> Any:
        """(entries under the prefix, the namespace revision they were read at): watch from there."""
        return self._do("GET", "/v1/coord/state?" + urllib.parse.urlencode({"prefix": prefix, "limit": limit}),
                        decode=lambda d: ([_entry(e) for e in d["items"]], d["revision"]))

    def changes(self, prefix: str = "", after: int = 0, timeout: float = 0.0) -> Any:
        """One long poll: (changes with revisions above ``after`` under the prefix, in order,
        the revision to ask from next).  Waits up to ``timeout`` s for the first."""
        qs = urllib.parse.urlencode({"prefix": prefix, "after": after, "timeout": timeout})
        return self._do("GET", "/v1/coord/watch?" + qs, decode=_changes, wait=timeout)

    # locks
    def lock_holder(self, name: str) -> Any:
        """(holder id, token) of a held lock, or None."""
        return self._do("GET", "/v1/coord/lock?" + urllib.parse.urlencode({"name": name}),
                        decode=lambda d: (d["holder"], d["token"]) if d["held"] else None)

    def _acquire(self, name: str, holder: str, ttl: float, wait: float) -> Any:
        return self._do("POST", "/v1/coord/lock/acquire", {"name": name, "holder": holder, "ttl": ttl, "wait": wait},
                        decode=lambda d: d["token"] if d["acquired"] else 0, wait=wait)

    def _renew(self, name: str, holder: str, token: int, ttl: float) -> Any:
        return self._do("POST", "/v1/coord/lock/renew", {"name": name, "holder": holder, "token": token, "ttl": ttl})

    def _release(self, name: str, holder: str, token: int) -> Any:
        return self._do("POST", "/v1/coord/lock/release", {"name": name, "holder": holder, "token": token},
                        decode=lambda d: d["released"])

    # queues
    def put(self, queue: str, value: Any, priority: int = 0) -> Any:
        """Append an item (priority 0..9: higher is delivered first); returns its id."""
        return self._do("POST", "/v1/coord/queue/put", {"name": queue, "value": value, "priority": priority},
                        decode=lambda d: d["id"])

    def get(self, queue: str, timeout: float = 0.0, visibility: float = 30.0, max_deliveries: int = 5) -> Any:
        """The next item, waiting up to ``timeout`` s; None if none came.  Unless acked within
        ``visibility`` s it is delivered again; after ``max_deliveries`` deliveries it moves to
        the queue "QUEUE.dead" instead."""
        return self._do("POST", "/v1/coord/queue/get",
                        {"name": queue, "timeout": timeout, "visibility": visibility, "max_deliveries": max_deliveries},
                        decode=lambda d: _item(queue, d), wait=timeout)

    def ack(self, item: Item, *, fence: Any = None) -> Any:
        """Done with the item (FenceError if it was delivered again since, or the fence is stale)."""
        return self._do("POST", "/v1/coord/queue/ack",
                        {"name": item.queue, "id": item.id, "delivery": item.delivery, "fence": _fence(fence)})

    def nack(self, item: Item, delay: float = 0.0) -> Any:
        """Give the item back: delivered again after ``delay`` s."""
        return self._do("POST", "/v1/coord/queue/nack",
                        {"name": item.queue, "id": item.id, "delivery": item.delivery, "delay": delay})

    def queue_depth(self, queue: str) -> Any:
        """(ready, delivered and not yet settled)."""
        return self._do("GET", "/v1/coord/queue?" + urllib.parse.urlencode({"name": queue}),
                        decode=lambda d: (d["ready"], d["inflight"]))

    # services
    def register_service(self, service: str, instance: str, address: str, port: int, *,
                         metadata: dict | None = None, weight: int = 1, ttl: float = 10.0) -> Any:
        """Register (or re-register) an instance; it expires ``ttl`` s after the last heartbeat."""
        return self._do("POST", "/v1/coord/service/register",
                        {"name": service, "instance": instance, "address": address, "port": port,
                         "metadata": metadata or {}, "weight": weight, "ttl": ttl})

    def heartbeat(self, service: str, instance: str, ttl: float = 10.0) -> Any:
        """Keep the registration alive; False if it had expired (register again)."""
        return self._do("POST", "/v1/coord/service/heartbeat", {"name": service, "instance": instance, "ttl": ttl},
                        decode=lambda d: d is not None, none_on="not_found")

    def deregister_service(self, service: str, instance: str) -> Any:
        return self._do("POST", "/v1/coord/service/deregister", {"name": service, "instance": instance})

    def discover(self, service: str) -> Any:
        """Every live instance of the service."""
        return self._do("GET", "/v1/coord/service?" + urllib.parse.urlencode({"name": service}),
                        decode=lambda d: [_service(i) for i in d["instances"]])

    def get_healthy_service(self, service: str) -> Any:
        """One live instance, picked by weight (the gateway's weighted router); None if none."""
        return self._do("GET", "/v1/coord/service/pick?" + urllib.parse.urlencode({"name": service}),
                        decode=lambda d: None if d is None else _service(d["instance"]), none_on="not_found")


# -- the synchronous client ------------------------------------------------------------------

class Coord(_Api):
    """The synchronous client: ``Coord(url, key)``; thread-safe (a connection per thread)."""

    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected a gateway URL such as http://127.0.0.1:8000, got {url!r}")
        self.url, self.timeout = url.rstrip("/"), timeout
        self._parts = parts
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._local = threading.local()
        self._renewer = _Renewer(self)

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self._parts.hostname, self._parts.port, timeout=self.timeout)
        return conn

    def _do(self, method, path, body=None, decode=lambda d: d, none_on=None, wait=0.0):
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for attempt in (0, 1):
            conn = self._conn()
            reused = conn.sock is not None
            conn.timeout = self.timeout + wait + (_LONG_POLL_MARGIN if wait else 0)
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.request(method, path, body=data, headers=self._headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._local.conn = None
                # a kept-alive connection the gateway had closed: the request never reached
                # it, so it is sent once more on a fresh one
                if not reused or attempt:
                    raise
            except BaseException:
                conn.close()
                self._local.conn = None
                raise
        if resp.status >= 400:
            err = _error(resp.status, raw)
            if none_on is not None and err.code == none_on:
                return decode(None)
            raise err
        return decode(json.loads(raw))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def lock(self, name: str, ttl: float = 10.0, timeout: float = 30.0, *, holder: str | None = None,
             on_lost: Callable[["Lock"], None] | None = None) -> "Lock":
        """A lock to use as ``with coord.lock(name) as lk``: acquired on entry (waiting in line
        up to ``timeout`` s, else LockTimeout), renewed every ttl/3 while held, released on exit."""
        return Lock(self, name, ttl, timeout, holder, on_lost)

    def try_lock(self, name: str, ttl: float = 10.0, *, holder: str | None = None,
                 on_lost: Callable[["Lock"], None] | None = None) -> "Lock | None":
        """The lock, held and renewing, if it is free now; None at once if not."""
        lk = Lock(self, name, ttl, 0.0, holder, on_lost)
        return lk if lk.acquire(timeout=0.0) else None

    def election(self, name: str, candidate: str | None = None, ttl: float = 10.0,
                 on_change: Callable[[bool], None] | None = None) -> "Election":
        return Election(self, name, candidate, ttl, on_change)

    def watch(self, prefix: str = "", after: int = 0, poll: float = 25.0) -> Iterator[Change]:
        """Every change under the prefix after revision ``after``, in order, forever; resume a
        broken watch from the last change's revision.  Compacted if that is gone."""
        while True:
            events, after = self.changes(prefix, after, poll)
            yield from events


class _LockState:
    """What Lock and AsyncLock share: the name, lease, holder id and the grant's state."""

    def __init__(self, coord: Any, name: str, ttl: float, timeout: float, holder: str | None,
                 on_lost: Callable[[Any], None] | None) -> None:
        self.coord, self.name, self.ttl, self.timeout = coord, name, ttl, timeout
        self.holder = holder or secrets.token_hex(8)
        self.on_lost = on_lost
        self.token = 0         # the last grant's fencing token (kept after release: it stays stale)
        self.lost = False
        self._held = False


class _Renewer:
    """One thread per ``Coord`` that renews every lock it holds, each every ttl/3: started
    with the first lock and kept, so a lock cycle neither starts nor joins a thread (that
    alone cost about 2 ms of a 4 ms acquire+release)."""

    def __init__(self, coord: "Coord") -> None:
        self.coord = coord
        self._due: dict[Lock, float] = {}            # held lock -> monotonic time of its next renewal
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None     # kept once started: idle, it only waits

    def add(self, lk: "Lock") -> None:
        with self._cond:
            self._due[lk] = time.monotonic() + lk.ttl / 3
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coord-lock-renewer", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, lk: "Lock", token: int | None = None) -> bool:
        """Stop renewing LK (only if still held with TOKEN, when given); False if it was not
        being renewed (released, lost, or since granted again)."""
        with self._cond:
            if token is not None and lk.token != token:
                return False
            return self._due.pop(lk, None) is not None

    def _next(self) -> "Lock":
        """The lock whose renewal is due, waiting for it (idle while none is held)."""
        with self._cond:
            while True:
                now = time.monotonic()
                lk = min(self._due, key=self._due.__getitem__, default=None)
                if lk is not None and self._due[lk] <= now:
                    self._due[lk] = now + lk.ttl / 3
                    return lk
                self._cond.wait(None if lk is None else self._due[lk] - now)

    def _run(self) -> None:
        while True:
            lk = self._next()
            token = lk.token
            try:
                self.coord._renew(lk.name, lk.holder, token, lk.ttl)
            except FenceError:
                if self.remove(lk, token):    # not released (nor granted again) meanwhile: really lost
                    lk._lose()
            except (CoordError, OSError):   # the gateway is unreachable: try again; the lease decides
                continue
            except Exception:   # noqa: BLE001 - an on_lost that raised must not stop the others' renewals
                continue


class Lock(_LockState):
    """A held (or wanted) lock of ``Coord``: ``token`` is the grant's fencing token; pass the
    lock as ``fence=`` to writes that must happen only while it is held.  Its lease is renewed
    by the client's one renewal thread (_Renewer) while held."""

    def __init__(self, coord: Coord, name: str, ttl: float, timeout: float, holder: str | None,
                 on_lost: Callable[["Lock"], None] | None) -> None:
        super().__init__(coord, name, ttl, timeout, holder, on_lost)

    @property
    def held(self) -> bool:
        return self._held and not self.lost

    def acquire(self, timeout: float | None = None) -> bool:
        wait = self.timeout if timeout is None else timeout
        token = self.coord._acquire(self.name, self.holder, self.ttl, wait)
        if not token:
            return False
        self.token, self.lost, self._held = token, False, True
        self.coord._renewer.add(self)
        return True

    def stop_renewing(self) -> None:
        """Stop renewing the lease and keep the lock (what a paused or dead holder looks like:
        tests and benchmarks use it); the lease then ends on its own."""
        self.coord._renewer.remove(self)

    def _lose(self) -> None:
        self.lost = True
        if self.on_lost is not None:
            self.on_lost(self)

    def release(self) -> bool:
        self.coord._renewer.remove(self)
        if not self._held:
            return False
        self._held = False
        return bool(self.coord._release(self.name, self.holder, self.token))

    def __enter__(self) -> "Lock":
        if not self._held and not self.acquire():
            raise LockTimeout(408, "lock_timeout", f"lock {self.name!r} not granted within {self.timeout:g}s")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Candidacy:
    """What Election and AsyncElection share: the lock a candidate campaigns with, and
    ``on_change(False)`` when its lease is lost."""

    def __init__(self, coord: Any, name: str, candidate: str | None, ttl: float,
                 on_change: Callable[[bool], None] | None, lock_class: type) -> None:
        self.coord, self.name, self.on_change = coord, name, on_change
        self._lock = lock_class(coord, name, ttl, 0.0, candidate, self._lost)
        self.candidate = self._lock.holder

    def _lost(self, _lock: Any) -> None:
        if self.on_change is not None:
            self.on_change(False)

    @property
    def is_leader(self) -> bool:
        return self._lock.held

    @property
    def token(self) -> int:
        return self._lock.token


class Election(_Candidacy):
    """Leader election on the lock NAME: ``campaign`` waits to lead; ``is_leader`` while the
    lease holds; ``on_change(True/False)`` when this candidate gains or loses leadership;
    ``leader_id()`` asks who leads now; ``resign`` steps down.  Others learn of a change by
    watching the key "@lock/NAME"."""

    def __init__(self, coord: Coord, name: str, candidate: str | None, ttl: float,
                 on_change: Callable[[bool], None] | None) -> None:
        super().__init__(coord, name, candidate, ttl, on_change, Lock)

    def campaign(self, timeout: float = 30.0) -> bool:
        if self._lock.held:
            return True
        won = self._lock.acquire(timeout)
        if won and self.on_change is not None:
            self.on_change(True)
        return won

    def leader_id(self) -> str | None:
        found = self.coord.lock_holder(self.name)
        return found[0] if found else None

    def resign(self) -> None:
        was = self._lock.held
        self._lock.release()
        if was and self.on_change is not None:
            self.on_change(False)


# -- the asyncio client ----------------------------------------------------------------------

class AsyncCoord(_Api):
    """The asyncio client: the same calls as ``Coord``, awaited.  ``await close()`` at the end."""

    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._session = None

    async def _do(self, method, path, body=None, decode=lambda d: d, none_on=None, wait=0.0):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        timeout = aiohttp.ClientTimeout(total=self.timeout + wait + (_LONG_POLL_MARGIN if wait else 0))
        async with self._session.request(method, self.url + path, data=data, timeout=timeout) as resp:
            raw = await resp.read()
        if resp.status >= 400:
            err = _error(resp.status, raw)
            if none_on is not None and err.code == none_on:
                return decode(None)
            raise err
        return decode(json.loads(raw))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "AsyncCoord":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def lock(self, name: str, ttl: float = 10.0, timeout: float = 30.0, *, holder: str | None = None,
             on_lost: Callable[["AsyncLock"], None] | None = None) -> "AsyncLock":
        """``async with coord.lock(name) as lk``: as Coord.lock."""
        return AsyncLock(self, name, ttl, timeout, holder, on_lost)

    async def try_lock(self, name: str, ttl: float = 10.0, *, holder: str | None = None,
                       on_lost: Callable[["AsyncLock"], None] | None = None) -> "AsyncLock | None":
        lk = AsyncLock(self, name, ttl, 0.0, holder, on_lost)
        return lk if await lk.acquire(timeout=0.0) else None

    def election(self, name: str, candidate: str | None = None, ttl: float = 10.0,
                 on_change: Callable[[bool], None] | None = None) -> "AsyncElection":
        return AsyncElection(self, name, candidate, ttl, on_change)

    async def watch(self, prefix: str = "", after: int = 0, poll: float = 25.0):
        """As Coord.watch, an async iterator."""
        while True:
            events, after = await self.changes(prefix, after, poll)
            for event in events:
                yield event


class AsyncLock(_LockState):
    """The asyncio twin of Lock: renewed by a task while held."""

    def __init__(self, coord: AsyncCoord, name: str, ttl: float, timeout: float, holder: str | None,
                 on_lost: Callable[["AsyncLock"], None] | None) -> None:
        super().__init__(coord, name, ttl, timeout, holder, on_lost)
        self._renewer: asyncio.Task | None = None

    @property
    def held(self) -> bool:
        return self._held and not self.lost

    async def acquire(self, timeout: float | None = None) -> bool:
        wait = self.timeout if timeout is None else timeout
        token = await self.coord._acquire(self.name, self.holder, self.ttl, wait)
        if not token:
            return False
        self.token, self.lost, self._held = token, False, True
        self._renewer = asyncio.create_task(self._renew_loop(token), name=f"coord-lock-{self.name}")
        return True

    async def _renew_loop(self, token: int) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.coord._renew(self.name, self.holder, token, self.ttl)
            except FenceError:
                self.lost = True
                if self.on_lost is not None:
                    self.on_lost(self)
                return
            except (CoordError, OSError, asyncio.TimeoutError):
                continue
            except Exception:   # aiohttp's client errors: the gateway unreachable; the lease decides
                continue

    async def release(self) -> bool:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if not self._held:
            return False
        self._held = False
        return bool(await self.coord._release(self.name, self.holder, self.token))

    async def __aenter__(self) -> "AsyncLock":
        if not self._held and not await self.acquire():
            raise LockTimeout(408, "lock_timeout", f"lock {self.name!r} not granted within {self.timeout:g}s")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.release()


class AsyncElection(_Candidacy):
    """The asyncio twin of Election."""

    def __init__(self, coord: AsyncCoord, name: str, candidate: str | None, ttl: float,
                 on_change: Callable[[bool], None] | None) -> None:
        super().__init__(coord, name, candidate, ttl, on_change, AsyncLock)

    async def campaign(self, timeout: float = 30.0) -> bool:
        if self._lock.held:
            return True
        won = await self._lock.acquire(timeout)
        if won and self.on_change is not None:
            self.on_change(True)
        return won

    async def leader_id(self) -> str | None:
        found = await self.coord.lock_holder(self.name)
        return found[0] if found else None

    async def resign(self) -> None:
        was = self._lock.held
        await self._lock.release()
        if was and self.on_change is not None:
            self.on_change(False)


# -- inside a function: ctx.coord --------------------------------------------------------------

_from_env: dict[str, Any] = {}
_from_env_lock = threading.Lock()


def from_env(kind: str = "sync") -> Any:
    """The process's client built from GANTRY_COORD_URL and GANTRY_COORD_TOKEN (what the worker
    gives every instance), made once; CoordError when the instance was started without them."""
    with _from_env_lock:
        client = _from_env.get(kind)
        if client is None:
            url, token = os.environ.get(COORD_URL_ENV, ""), os.environ.get(COORD_TOKEN_ENV, "")
            if not url or not token:
                raise CoordError(0, "not_configured", f"coordination is not configured for this instance "
                                                      f"({COORD_URL_ENV} and {COORD_TOKEN_ENV} are unset): "
                                                      "the worker needs GANTRY_COORD_URL")
            client = _from_env[kind] = (Coord if kind == "sync" else AsyncCoord)(url, token)
        return client

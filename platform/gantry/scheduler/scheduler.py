"""The scheduler's loop and leadership.

Every replica runs ``run``; only the holder of the leader lease (gantry.coord.LeaderLease)
acts, and everything it writes that makes a worker act is fenced by its epoch in Redis
(gantry.scheduler.writes), so two leaders never act at once even while a deposed one still
believes it leads.

A full pass (``_iteration``) runs every ``interval``: reap (reaper.tend) every instance on
every node, reconcile each function (reconcile.Reconciler), drain what is left of deleted
functions, and forget dead nodes; about once a second it also fires the due ticks of
[[schedules]] (gantry.scheduler.ticker).  A "demand:NAME" or "fn:NAME" event on keys.EVENTS wakes
the loop to reconcile just that function at once: the cold-start path is one targeted
pass (about ten Redis round trips), not a wait for the next tick.
"""
from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import keys
from ..coord import LeaderLease
from ..state import Instance, Node
from ..store import Deposed, Store
from .accrual import Accrual
from .nodes import NodeWatch
from .reaper import tend
from .reconcile import Reconciler
from .settings import SchedulerSettings
from .ticker import Ticker

log = logging.getLogger(__name__)

_HINTS = ("demand", "fn")
# What one function's failure must not swallow: they stop the whole pass (a newer leader,
# Redis out of reach), as before.
_NOT_ISOLATED = (Deposed, RedisConnectionError, RedisTimeoutError, OSError)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Scheduler:
    def __init__(self, settings: SchedulerSettings, redis) -> None:
        self.settings = settings
        self._redis = redis                          # for the events subscription
        self.store = Store(redis)
        self.lease = LeaderLease(self.store, settings.holder_id, settings.lease_ms)
        self.reconciler = Reconciler(self.store, settings)
        self.nodes = NodeWatch(settings.node_dead_after, settings.node_grace)
        self.accrual = Accrual(redis, settings.accrue_interval)
        self.ticker = Ticker(redis, self.store, settings.schedule_catchup, settings.async_retention)
        # instance id -> (state, wall time first seen in it): unhealthy and stuck-command clocks
        self._state_since: dict[str, tuple[str, float]] = {}
        self._hinted: set[str] = set()              # functions to reconcile at once
        self._wake: asyncio.Event | None = None
        self._full_now = False

    # --- leadership --------------------------------------------------------------------

    async def _leading(self) -> int:
        """Renew (or try to take) the lease when due; the epoch if we lead now, else 0."""
        now = time.monotonic()
        if self.lease.renew_due(now):
            await self.lease.acquire_or_renew(now)
        return self.lease.epoch if self.lease.is_leader(time.monotonic()) else 0

    async def _deposed(self, exc: Deposed) -> None:
        log.warning("scheduler %s: a fenced write for %s was refused; a newer leader exists",
                    self.settings.holder_id, exc)
        await self.lease.acquire_or_renew(time.monotonic())

    # --- passes ------------------------------------------------------------------------

    async def _iteration(self, now: float | None = None) -> None:
        """One full reconcile pass when leader; nothing otherwise.  ``now`` is wall time."""
        epoch = await self._leading()
        if not epoch:
            return
        try:
            await self._full_pass(time.time() if now is None else now, epoch)
        except Deposed as exc:
            await self._deposed(exc)

    async def reconcile_functions(self, names, now: float | None = None) -> None:
        """Reconcile only these functions at once (the demand path), when leader."""
        epoch = await self._leading()
        if not epoch:
            return
        now = time.time() if now is None else now
        try:
            nodes, live, suspect, _ = await self._node_view(now)
            for name in names:
                await self._isolated(name, self._reconcile_now(name, nodes, live, suspect, now, epoch))
        except Deposed as exc:
            await self._deposed(exc)

    async def _reconcile_now(self, name: str, nodes, live: set[str], suspect: set[str], now: float,
                             epoch: int) -> None:
        store = self.store
        fn = await store.get_function(name)
        if fn is None:
            return                      # deleted or half-deployed: the full pass handles it
        tended = await tend(store, epoch, await store.function_instances(name), live, now,
                            self.settings.start_timeout, self._state_since,
                            self.settings.unhealthy_timeout, suspect, self.reconciler.isolation)
        self.reconciler.note_failures(tended.failed, now)
        await self.reconciler.reconcile(fn, tended.kept, nodes, now, epoch)

    async def _isolated(self, name: str, work) -> None:
        """Await ``work``, one function's share of a pass.  Its own failure (an unreadable
        record, a bug) is logged once and marked on it (Reconciler.failed); the pass goes on
        with the others, so one bad spec cannot stop scheduling for everyone."""
        try:
            await work
        except _NOT_ISOLATED:
            raise
        except Exception as exc:
            await self.reconciler.failed(name, exc)
        else:
            self.reconciler.succeeded(name)

    async def _full_pass(self, now: float, epoch: int) -> None:
        store = self.store
        names = await store.function_names()
        nodes, live, suspect, node_ids = await self._node_view(now)
        await self.ticker.maybe(names, now, epoch)    # [[schedules]]: about once a second

        instances = await self._all_instances(names, node_ids)
        await self.accrual.maybe(instances, now)      # before tend: reaping accrues its own
        ids = {i.id for i in instances}
        self._state_since = {k: v for k, v in self._state_since.items() if k in ids}
        tended = await tend(store, epoch, instances, live, now, self.settings.start_timeout,
                            self._state_since, self.settings.unhealthy_timeout, suspect, self.reconciler.isolation)
        self.reconciler.note_failures(tended.failed, now)
        by_function: dict[str, list[Instance]] = {}
        for inst in tended.kept:
            by_function.setdefault(inst.function, []).append(inst)

        for name in names:
            if not self.lease.is_leader(time.monotonic()):
                return                  # renewal overdue: stop acting mid-pass
            instances_of = by_function.pop(name, [])
            await self._isolated(name, self._reconcile_kept(name, instances_of, nodes, now, epoch))
        for name, leftover in sorted(by_function.items()):             # deleted functions
            await self._isolated(name, self.reconciler.drain_all(name, leftover, epoch))
        self.reconciler.forget(set(names) | set(by_function))

    async def _reconcile_kept(self, name: str, instances: list[Instance], nodes, now: float,
                              epoch: int) -> None:
        fn = await self.store.get_function(name)
        if fn is not None:
            await self.reconciler.reconcile(fn, instances, nodes, now, epoch)

    async def _all_instances(self, names: list[str], node_ids: list[str]) -> list[Instance]:
        """Every instance record any node or function set names (a deleted function's
        instances are found through their nodes); ids without a record leave the sets."""
        store = self.store
        owners = [(None, node_id) for node_id in node_ids] + [(name, None) for name in names]
        seen: dict[str, list[tuple[str | None, str | None]]] = {}
        for owner, members in zip(owners, await store.instance_sets(owners)):
            for member in members:
                seen.setdefault(member, []).append(owner)
        found = await store.get_instances(sorted(seen))
        for missing in set(seen) - {i.id for i in found}:
            for function, node in seen[missing]:
                await store.forget_ids(function, node, [missing])
        return found

    async def _node_view(self, now: float) -> tuple[list[Node], set[str], set[str], list[str]]:
        """The live nodes, their ids, the suspect ids and every known id; acts on what the
        NodeWatch says changed (a dead node's capacity record dropped, a long-dead node forgotten)."""
        store = self.store
        node_ids = await store.node_ids()
        nodes = await store.live_nodes()
        live = {n.id for n in nodes}
        changes = self.nodes.observe(node_ids, live, now)
        for node_id in changes.newly_suspect:
            log.warning("node %s missed its heartbeat: suspect; its instances are kept for %gs",
                        node_id, self.settings.node_dead_after)
        for node_id in changes.newly_dead:
            log.warning("node %s is dead (no heartbeat for %gs): its instances are reaped and replaced",
                        node_id, self.settings.node_dead_after)
            await store.forget_node(node_id, everything=False)
        for node_id in changes.forget:
            if await store.forget_node(node_id, everything=True):
                log.info("node %s forgotten", node_id)
            self.nodes.forgotten(node_id)
        return nodes, live, changes.suspect, node_ids

    # --- the loop ----------------------------------------------------------------------

    def _hint(self, message: str) -> None:
        kind, _, name = message.partition(":")
        if kind in _HINTS and name:
            self._hinted.add(name)
        elif kind == "node":
            self._full_now = True
        else:
            return
        if self._wake is not None:
            self._wake.set()

    async def _listen(self, stop_event: asyncio.Event) -> None:
        """Turn events into hints; reconnect after errors (every reader also polls)."""
        while not stop_event.is_set():
            pubsub = self.store.events()
            try:
                await pubsub.subscribe(keys.EVENTS)
                while not stop_event.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self._hint(_text(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("scheduler events: %s; resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    async def run(self, stop_event: asyncio.Event) -> None:
        """Poll loop: a full pass every interval (renewing the lease when due), a targeted
        pass at once for hinted functions.  Returns when ``stop_event`` is set."""
        self._wake = asyncio.Event()
        wake = self._wake

        async def relay_stop() -> None:
            await stop_event.wait()
            wake.set()

        tasks = [asyncio.create_task(self._listen(stop_event)), asyncio.create_task(relay_stop())]
        next_full = 0.0
        try:
            while not stop_event.is_set():
                try:
                    if self._hinted:
                        names, self._hinted = sorted(self._hinted), set()
                        await self.reconcile_functions(names)
                    if self._full_now or time.monotonic() >= next_full:
                        self._full_now = False
                        next_full = time.monotonic() + self.settings.interval
                        await self._iteration()
                except (RedisError, OSError) as exc:
                    log.warning("scheduler pass failed: %s", exc)
                except Exception:               # a bug must not stop scheduling: log, go on
                    log.exception("scheduler pass failed")
                wake.clear()
                delay = next_full - time.monotonic()
                if delay > 0 and not self._hinted and not self._full_now and not stop_event.is_set():
                    try:
                        await asyncio.wait_for(wake.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._wake = None

    async def close(self) -> None:
        """Release the lease so a standby takes over without waiting for it to expire."""
        await self.lease.release()

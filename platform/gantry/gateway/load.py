"""Reporting this gateway's load per function to keys.function_load (the scheduler sums them).

Each report is ``HSET fn:NAME:load GATEWAY_ID msgpack([inflight, waiting, last_request,
reported])`` (wall-clock times), for every function this gateway has seen, every
``load_report_interval``; and at once, with a ``demand:NAME`` hint on keys.EVENTS, when a
request starts waiting for an instance.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .. import state
from ..store import Store

if TYPE_CHECKING:   # cache.py builds each Entry's Load from here
    from .cache import Entry, FunctionCache

log = logging.getLogger("gantry.gateway")

DEMAND_HINT_INTERVAL = 0.1   # seconds: waiting requests of one function share one hint per interval
LOAD_TTL = 60                # seconds: a gateway that dies leaves no report behind for long


class Load:
    """This gateway's load on one function: what the reports carry, and the last hint."""

    __slots__ = ("inflight", "waiting", "last_request", "demand_signalled")

    def __init__(self) -> None:
        self.inflight = 0             # requests being forwarded
        self.waiting = 0              # requests waiting for a free slot
        self.last_request = 0.0       # wall time
        self.demand_signalled = 0.0   # monotonic time of the last demand hint

    def busy(self) -> bool:
        return bool(self.inflight or self.waiting)


def load_record(load: Load, now: float) -> bytes:
    return state.pack([load.inflight, load.waiting, load.last_request, now])


class LoadReporter:
    def __init__(self, store: Store, cache: FunctionCache, gateway_id: str) -> None:
        self.store = store
        self.cache = cache
        self.gateway_id = gateway_id

    async def report(self) -> None:
        """One periodic report of every function seen (one pipeline)."""
        entries = [e for e in self.cache.entries.values() if e.known.exists or e.load.busy()]
        if not entries:
            return
        now = time.time()
        await self.store.report_load(self.gateway_id, {e.name: load_record(e.load, now) for e in entries}, LOAD_TTL)

    async def signal_demand(self, entry: Entry) -> None:
        """A request of ENTRY's function found no free instance: tell the scheduler now."""
        mono = time.monotonic()
        if mono - entry.load.demand_signalled < DEMAND_HINT_INTERVAL:
            return
        entry.load.demand_signalled = mono
        try:
            await self.store.report_load(self.gateway_id, {entry.name: load_record(entry.load, time.time())},
                                         LOAD_TTL, demand=True)
        except Exception as exc:  # the periodic report will carry it
            log.warning("demand signal failed", extra={"function": entry.name, "error": repr(exc)})

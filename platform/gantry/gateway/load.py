"""Reporting this gateway's load per function to keys.function_load (the scheduler sums them).

Each report is ``HSET fn:NAME:load GATEWAY_ID msgpack([inflight, waiting, last_request,
reported])`` (wall-clock times), for every function this gateway has seen, every
``load_report_interval``; and at once, with a ``demand:NAME`` hint on keys.EVENTS, when a
request starts waiting for an instance.
"""
from __future__ import annotations

import logging
import time

from .. import keys, state
from .cache import Entry, FunctionCache

log = logging.getLogger("gantry.gateway")

DEMAND_HINT_INTERVAL = 0.1   # seconds: waiting requests of one function share one hint per interval
LOAD_TTL = 60                # seconds: a gateway that dies leaves no report behind for long


def load_record(entry: Entry, now: float) -> bytes:
    return state.pack([entry.inflight, entry.waiting, entry.last_request, now])


class LoadReporter:
    def __init__(self, redis, cache: FunctionCache, gateway_id: str) -> None:
        self.redis = redis
        self.cache = cache
        self.gateway_id = gateway_id

    async def report(self) -> None:
        """One periodic report of every function seen (one pipeline)."""
        entries = [e for e in self.cache.entries.values() if e.exists or e.waiting or e.inflight]
        if not entries:
            return
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            key = keys.function_load(entry.name)
            pipe.hset(key, self.gateway_id, load_record(entry, now))
            pipe.expire(key, LOAD_TTL)
        await pipe.execute()

    async def signal_demand(self, entry: Entry) -> None:
        """A request of ENTRY's function found no free instance: tell the scheduler now."""
        mono = time.monotonic()
        if mono - entry.demand_signalled < DEMAND_HINT_INTERVAL:
            return
        entry.demand_signalled = mono
        key = keys.function_load(entry.name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, self.gateway_id, load_record(entry, time.time()))
        pipe.expire(key, LOAD_TTL)
        pipe.publish(keys.EVENTS, f"demand:{entry.name}")
        try:
            await pipe.execute()
        except Exception as exc:  # the periodic report will carry it
            log.warning("demand signal failed", extra={"function": entry.name, "error": repr(exc)})

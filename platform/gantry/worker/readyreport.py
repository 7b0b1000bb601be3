"""The runtime's ready report (gantry_runtime.wire.is_ready_line), carried from the log
follower's thread to the start command waiting on the event loop.

A fresh instance's start probes /healthz every FAST_PROBE (worker.commands); between two
probes it waits on this report instead of sleeping, so the probe that finds it ready runs the
moment the runtime logs its ready line, not up to FAST_PROBE later.  The probe stays the
judge (and the fallback when no line comes: a log stream that attaches late, a runtime without
the line): the line says when to look, never what is seen.  Isolation holds: a container's
log stream speaks only for that container, and the worker only reads it.
"""
from __future__ import annotations

import asyncio


class ReadyReport:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        """The ready line was read (called on the follower's thread)."""
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:   # the loop is closed: nobody waits any more
            pass

    async def wait(self, timeout: float) -> bool:
        """Wait at most TIMEOUT seconds for a report; True (and the report used up) if one came."""
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        self._event.clear()
        return True

"""The gateway's background work, each loop one ``_iteration`` driven by ``run_every`` (so a
test can run exactly one): refresh the function cache and the admin key hash, report load; and
``flushing``, the loop that writes what the request path gathered locally (metrics, usage)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from ..store import Store
from .auth import Authenticator
from ..cancellation import raise_if_cancelled
from .cache import FunctionCache
from .load import LoadReporter

log = logging.getLogger("gantry.gateway")


async def run_every(interval: float, iteration: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``iteration`` every ``interval`` seconds until cancelled; log and go on after errors."""
    while True:
        try:
            await iteration()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{what} failed", extra={"error": repr(exc)})
        raise_if_cancelled()
        await asyncio.sleep(interval)


FINAL_FLUSH_TIMEOUT = 5.0    # seconds the shutdown flush may take


async def flush_until_stopped(flush: Callable[[], Awaitable[None]], interval: float, stop: asyncio.Event,
                              what: str, tick: Callable[[], None] | None = None, tick_every: float = 1.0) -> None:
    """Call ``flush`` every INTERVAL and once more when STOP is set (and ``tick``, if given, every
    TICK_EVERY in between, from a plain timer callback: no task or wait per tick).  Never
    cancelled while a write is in flight: a cancelled script may still have run, and what its
    caller put back would then be written twice; so it is only asked to stop between writes.
    A failed flush is logged; the flusher keeps what it did not write."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def ticking() -> None:
        nonlocal timer
        timer = loop.call_later(tick_every, ticking)   # first: a tick that raises does not stop them
        tick()

    if tick:
        timer = loop.call_later(tick_every, ticking)
    try:
        while True:
            try:
                async with asyncio.timeout(interval):   # no task per wait, as wait_for makes
                    await stop.wait()
            except TimeoutError:
                pass
            if stop.is_set():
                if timer is not None:
                    timer.cancel()
                    tick()               # the last sample goes into the last flush
            try:
                await flush()
            except Exception as exc:
                log.warning(f"{what} flush failed; it is kept for the next one", extra={"error": repr(exc)})
            if stop.is_set():
                return
    finally:
        if timer is not None:
            timer.cancel()


@contextlib.asynccontextmanager
async def flushing(flush: Callable[[], Awaitable[None]], interval: float, what: str,
                   left: Callable[[], dict], tick: Callable[[], None] | None = None, tick_every: float = 1.0):
    """Run ``flush_until_stopped`` for the body of the ``with``, then stop it and wait (bounded)
    for its last flush; LEFT says what was not written if that wait runs out."""
    stop = asyncio.Event()
    task = asyncio.create_task(flush_until_stopped(flush, interval, stop, what, tick, tick_every), name=f"gantry-{what}-flush")
    try:
        yield
    finally:
        stop.set()
        try:
            async with asyncio.timeout(FINAL_FLUSH_TIMEOUT):
                await task
        except TimeoutError:
            log.warning(f"{what} not written at shutdown", extra=left())


class CacheRefresher:
    def __init__(self, store: Store, cache: FunctionCache, auth: Authenticator, fixed_admin_hash: bool) -> None:
        self.store, self.cache, self.auth = store, cache, auth
        self.fixed_admin_hash = fixed_admin_hash

    async def refresh_admin_hash(self) -> None:
        if self.fixed_admin_hash:
            return
        self.auth.admin_hash = await self.store.admin_key_hash()

    async def _iteration(self) -> None:
        await self.refresh_admin_hash()
        await self.cache.refresh_all()


class LoadLoop:
    def __init__(self, reporter: LoadReporter) -> None:
        self.reporter = reporter

    async def _iteration(self) -> None:
        await self.reporter.report()

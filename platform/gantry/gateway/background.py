"""The gateway's background work, each loop one ``_iteration`` driven by ``run_every`` (so a
test can run exactly one): refresh the function cache and the admin key hash, report load."""
from __future__ import annotations

import asyncio
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

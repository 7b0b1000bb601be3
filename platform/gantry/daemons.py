"""One component per process, for a multi-node deployment (`gantry up` runs all three in
one process instead): `gantry worker` on every Docker host, `gantry scheduler` (one or
more: one leads), `gantry gateway` (any number).  Each reads its settings from the
environment and GANTRY_REDIS_URL, and stops cleanly on SIGTERM or SIGINT.  A bad setting
prints one line `gantry: error: ...` and exits 2, before anything starts."""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Awaitable, Callable, TypeVar

from gantry_runtime.loop import run_until_signal

from .settings import redis_client, redis_url

S = TypeVar("S")
EXIT_CONFIG = 2


def configure(read_settings: Callable[[], S]) -> S:
    """``read_settings()``; a bad setting prints one line and exits, never a traceback."""
    try:
        return read_settings()
    except ValueError as exc:   # SettingsError, or a settings class's own cross-check
        print(f"gantry: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def run_daemon(read_settings: Callable[[], S], body: Callable[[S, asyncio.Event], Awaitable[None]]) -> int:
    """Read the settings, then run ``body(settings, stop)`` until SIGTERM/SIGINT sets ``stop``."""
    settings = configure(read_settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_until_signal(lambda stop: body(settings, stop))
    return 0


def with_secrets_key(read_settings: Callable[[], S]) -> Callable[[], S]:
    """``read_settings`` that also checks the secrets master key (GANTRY_SECRETS_KEY or
    GANTRY_SECRETS_KEY_FILE) when one is set: a bad one is a configuration error."""
    def read() -> S:
        from .tenants.secretbox import from_env
        from_env()
        return read_settings()
    return read


def _redis():
    return redis_client(redis_url())


def worker(remove_on_exit: bool) -> int:
    from .worker.settings import WorkerSettings

    async def body(settings: WorkerSettings, stop: asyncio.Event) -> None:
        import docker

        from .worker.agent import WorkerAgent

        r = _redis()
        agent = WorkerAgent(settings, r, docker.from_env(timeout=300))
        await agent.register()
        try:
            await agent.run(stop)
        finally:
            await agent.shutdown(remove_containers=remove_on_exit)
            await r.aclose()

    return run_daemon(with_secrets_key(WorkerSettings.from_env), body)


def scheduler() -> int:
    from .scheduler.settings import SchedulerSettings

    async def body(settings: SchedulerSettings, stop: asyncio.Event) -> None:
        from .scheduler.scheduler import Scheduler

        r = _redis()
        sched = Scheduler(settings, r)
        try:
            await sched.run(stop)
        finally:
            await sched.close()
            await r.aclose()

    return run_daemon(SchedulerSettings.from_env, body)


def gateway() -> int:
    from .gateway.__main__ import main

    return main()


if __name__ == "__main__":  # python -m gantry.daemons worker|scheduler|gateway
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    runners = {"worker": lambda: worker("--keep" not in sys.argv), "scheduler": scheduler, "gateway": gateway}
    if name not in runners:
        sys.exit("usage: python -m gantry.daemons worker [--keep] | scheduler | gateway")
    sys.exit(runners[name]())

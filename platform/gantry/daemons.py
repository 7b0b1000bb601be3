"""One component per process, for a multi-node deployment (`gantry up` runs all three in
one process instead): `gantry worker` on every Docker host, `gantry scheduler` (one or
more: one leads), `gantry gateway` (any number).  Each reads its settings from the
environment and GANTRY_REDIS_URL, and stops cleanly on SIGTERM or SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _run(coro_factory) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        factory = None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    return 0


def _redis():
    import redis.asyncio as aioredis

    return aioredis.from_url(os.environ.get("GANTRY_REDIS_URL") or DEFAULT_REDIS)


def worker(remove_on_exit: bool) -> int:
    import docker

    from .worker.agent import WorkerAgent
    from .worker.settings import WorkerSettings

    async def body(stop: asyncio.Event) -> None:
        r = _redis()
        agent = WorkerAgent(WorkerSettings.from_env(), r, docker.from_env(timeout=300))
        await agent.register()
        try:
            await agent.run(stop)
        finally:
            await agent.shutdown(remove_containers=remove_on_exit)
            await r.aclose()

    return _run(body)


def scheduler() -> int:
    from .scheduler.scheduler import Scheduler
    from .scheduler.settings import SchedulerSettings

    async def body(stop: asyncio.Event) -> None:
        r = _redis()
        sched = Scheduler(SchedulerSettings.from_env(), r)
        try:
            await sched.run(stop)
        finally:
            await sched.close()
            await r.aclose()

    return _run(body)


def gateway() -> int:
    from .gateway.__main__ import main

    return main()


if __name__ == "__main__":  # python -m gantry.daemons worker|scheduler|gateway
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    runners = {"worker": lambda: worker("--keep" not in sys.argv), "scheduler": scheduler, "gateway": gateway}
    if name not in runners:
        sys.exit("usage: python -m gantry.daemons worker [--keep] | scheduler | gateway")
    sys.exit(runners[name]())

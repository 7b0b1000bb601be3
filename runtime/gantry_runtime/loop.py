"""``run_until_signal``: how every Gantry process runs its event loop and learns to stop.

Standard library only (uvloop is used when it is installed): the runtime calls it inside the
container, the platform's daemons and ``gantry up`` on the host.
"""
from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop works, only slower
        return None
    return uvloop.new_event_loop


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` to completion on a fresh loop and return its result. SIGTERM and
    SIGINT set ``stop`` (a second signal changes nothing): ``main`` decides how to wind down."""

    async def body() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main(stop)
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(body())

"""``python -m gantry.gateway``: serve the gateway on uvloop, configured from the environment."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .app import serve
from .settings import GatewaySettings, SettingsError


async def _main(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as exc:
        print(f"gantry gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # the plain loop works, only slower
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

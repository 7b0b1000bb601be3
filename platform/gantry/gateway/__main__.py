"""``python -m gantry.gateway``: serve the gateway, configured from the environment, until
SIGTERM or SIGINT; with GANTRY_GATEWAY_WORKERS above 1, supervise that many gateway processes
on the one port instead (gateway.workers)."""
from __future__ import annotations

import logging
import sys

from ..daemons import configure, run_daemon, with_secrets_key
from .app import serve
from .settings import GatewaySettings
from .workers import supervise


def main() -> int:
    read = with_secrets_key(GatewaySettings.from_env)
    settings = configure(read)    # a bad setting stops here, before any worker starts
    if settings.workers > 1 and settings.worker_index is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        logging.getLogger("gantry.gateway").info("starting gateway workers", extra={
            "workers": settings.workers, "port": settings.port})
        return supervise(settings.workers)
    return run_daemon(read, serve)


if __name__ == "__main__":
    sys.exit(main())

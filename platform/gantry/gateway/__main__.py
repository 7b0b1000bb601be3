"""``python -m gantry.gateway``: serve the gateway, configured from the environment, until
SIGTERM or SIGINT."""
from __future__ import annotations

import sys

from ..daemons import run_daemon, with_secrets_key
from .app import serve
from .settings import GatewaySettings


def main() -> int:
    return run_daemon(with_secrets_key(GatewaySettings.from_env), serve)


if __name__ == "__main__":
    sys.exit(main())

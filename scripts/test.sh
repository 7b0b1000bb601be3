#!/usr/bin/env bash
# The test command: set up (idempotent), then the whole suite against the real Docker engine
# and Redis server that setup started.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# One-time (and idempotent) set-up of a fresh Debian bookworm machine for Gantry:
#   1. Debian packages: docker.io, redis-server, debootstrap, nginx-light, wrk, valgrind, curl, chromium
#      (apt-get update first)
#   2. dockerd in the background and a Redis server on loopback, if not already answering
#   3. a virtual environment in .venv with Gantry (Cython extensions built) and its dev tools
#   4. the base image (offline debootstrap) and the runtime image
# A second run finds everything in place and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${GANTRY_VENV:-$ROOT/.venv}
REDIS_PORT=${GANTRY_REDIS_PORT:-6379}
STATE=${GANTRY_STATE_DIR:-$HOME/.local/state/gantry}
mkdir -p "$STATE"
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v debootstrap >/dev/null || missing+=(debootstrap)
# the benchmark harness (`gantry bench`): nginx as the reverse-proxy baseline, wrk as the load generator
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
# the bench's instruction counts (valgrind's callgrind: gantry.bench.instructions)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v curl >/dev/null || missing+=(curl)
# the tests' real browser: headless Chromium's EventSource reads a function's Server-Sent Events
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  step "starting dockerd in the background (log: $STATE/dockerd.log)"
  # A daemon killed without cleaning up leaves its pid file; dockerd refuses to start
  # while the pid in it names a live process, so drop it unless that process is dockerd.
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != dockerd ]; then
    as_root rm -f /var/run/docker.pid
  fi
  as_root sh -c "nohup dockerd >'$STATE/dockerd.log' 2>&1 &"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; echo "dockerd did not start" >&2; exit 1; }
fi

if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  step "starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --logfile "$STATE/redis.log" --dir "$STATE"
  for _ in $(seq 1 20); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.25; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null
fi

# Reinstall only when the packaging or the Cython sources changed.
stamp="$VENV/.gantry-installed"
want=$( { cat pyproject.toml setup.py; cat ext/*.pyx ext/*.pxd 2>/dev/null || true; } | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing Gantry and its dependencies into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel cython
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
  # The editable install builds the extensions; build them in place too, so the source tree
  # imports the compiled modules whichever way it is put on sys.path.
  "$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null
  echo "$want" > "$stamp"
fi

step "images"
"$VENV/bin/gantry" images

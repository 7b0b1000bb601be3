#!/usr/bin/env bash
# Build gantry/base:bookworm, the image every function image starts from, with no registry:
# debootstrap a minimal Debian bookworm with python3 and `docker import` it.  Where a
# registry answers, python:3.11-slim (also bookworm) is tagged instead.  Idempotent: an
# existing tag is kept unless --force is given.
set -euo pipefail
TAG=${GANTRY_BASE_IMAGE:-gantry/base:bookworm}
MIRROR=${GANTRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != "--force" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG present"
  exit 0
fi

if timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
  docker tag python:3.11-slim "$TAG"
  echo "base image $TAG from python:3.11-slim"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
work=$(mktemp -d /tmp/gantry-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "base image: no registry answered; debootstrap of bookworm into $work (about a minute)"
debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$work/rootfs" "$MIRROR" \
  > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
# What a function container never needs: package caches, docs, manuals, locales.
rm -rf "$work"/rootfs/var/cache/apt/* "$work"/rootfs/var/lib/apt/lists/* \
  "$work"/rootfs/usr/share/{doc,man,info,locale}/* "$work"/rootfs/var/log/*
tar -C "$work/rootfs" --numeric-owner -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'CMD ["python3"]' \
  -m "gantry base: debootstrap bookworm + python3" - "$TAG" >/dev/null
docker run --rm --network none "$TAG" python3 -c 'import sys; print("base image", sys.version.split()[0])'

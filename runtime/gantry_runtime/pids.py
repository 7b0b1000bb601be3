"""The container's pids limit: how close the instance is to it, and the runtime's own zombies.

Every process and thread counts against the limit (``pids_limit`` in the worker's container
spec).  A handler that forks and never waits leaves zombies behind, and a zombie keeps its
pid: once they fill the limit no thread or process can start, and the instance is wedged.
Two things keep that from lasting:

- an init (Docker's ``--init``, tini) is PID 1 and reaps orphans; but a zombie whose parent
  is still alive is its parent's to reap, and the handler's children are the runtime's.  So
  the runtime reaps its own exited children too, but only after pressure: from when half
  the pids are in use (``REAP_AT``) until ``REAP_FOR`` seconds after they no longer are.
  Otherwise a handler's ``Popen.wait()`` must still find its own child's exit status;
- ``/healthz`` answers 503 while every pid is taken, so the worker marks the instance
  unhealthy and the scheduler replaces it if that lasts.

Reading the counters is two small files (cgroup v2, or v1's ``pids`` controller); outside a
container with a limit (tests on the host) there is nothing to read and nothing is done.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

_PLACES = ("/sys/fs/cgroup", "/sys/fs/cgroup/pids")    # v2 (and v1 with cgroupns), v1
REAP_AT = 0.5        # reap exited children once half the pids are in use ...
REAP_FOR = 60.0      # ... and for this many seconds after the last time they were


@dataclass(frozen=True)
class Usage:
    current: int
    limit: int

    @property
    def exhausted(self) -> bool:
        """No pid left: neither fork nor a new thread can succeed."""
        return self.current >= self.limit

    @property
    def pressed(self) -> bool:
        return self.current >= self.limit * REAP_AT


class Pressure:
    """When to reap (the decision, pure): ``due`` is asked about once a second."""

    def __init__(self) -> None:
        self.until = float("-inf")

    def due(self, usage: Usage | None, now: float) -> bool:
        if usage is not None and usage.pressed:
            self.until = now + REAP_FOR
        return now < self.until


def find(places: tuple[str, ...] = _PLACES) -> str | None:
    """The directory holding pids.current and pids.max, or None."""
    for place in places:
        if os.path.isfile(os.path.join(place, "pids.current")) and os.path.isfile(os.path.join(place, "pids.max")):
            return place
    return None


def read(place: str | None) -> Usage | None:
    """The usage now; None without a place or without a limit ("max")."""
    if place is None:
        return None
    try:
        with open(os.path.join(place, "pids.current")) as f:
            current = int(f.read())
        with open(os.path.join(place, "pids.max")) as f:
            limit = f.read().strip()
    except (OSError, ValueError):
        return None
    return Usage(current, int(limit)) if limit.isdigit() else None


def reap() -> int:
    """Reap every exited child of this process (never blocks); how many were reaped."""
    count = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return count
        if pid == 0:
            return count
        count += 1

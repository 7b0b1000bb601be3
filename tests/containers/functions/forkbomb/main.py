"""Bounded fork bombs: each forks until the pids limit refuses (or a count or a deadline is
reached) and never waits for its children, as careless or hostile code would."""
import os
import time

PIDS = "/sys/fs/cgroup/pids/pids.current", "/sys/fs/cgroup/pids.current"


def _pids() -> int | None:
    for path in PIDS:
        try:
            with open(path) as f:
                return int(f.read())
        except OSError:
            continue
    return None


def _fork(most: int, seconds: float, child) -> dict:
    forked = refused = 0
    deadline = time.monotonic() + seconds
    while forked < most and time.monotonic() < deadline:
        try:
            pid = os.fork()
        except OSError:                 # EAGAIN: every pid is taken
            refused += 1
            break
        if pid == 0:                    # the child: never returns, never waited for
            try:
                child()
            finally:
                os._exit(0)
        forked += 1
    return {"forked": forked, "refused": refused, "pids": _pids()}


def bomb(event, ctx):
    """Children that exit at once: zombies, each holding a pid until someone reaps it."""
    event = event or {}
    return _fork(event.get("most", 10_000), event.get("seconds", 5), lambda: None)


def hold(event, ctx):
    """Children that live ``hold`` seconds (at most 30) as /bin/sleep (small, unlike a copy
    of the runtime): every pid is taken meanwhile."""
    event = event or {}
    seconds = str(min(30.0, float(event.get("hold", 20))))
    return _fork(event.get("most", 10_000), event.get("seconds", 5),
                 lambda: os.execv("/bin/sleep", ["sleep", seconds]))

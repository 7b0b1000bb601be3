"""Several gateway processes on one port (``gantry gateway --workers N``): a supervisor starts N
copies of ``python -m gantry.gateway``, each binding the same address with SO_REUSEPORT so the
kernel spreads new connections over them, and keeps N running until it is told to stop.

Each worker is an ordinary gateway replica (docs/architecture.md): what replicas share (rate
limits, the function cache, async work) already goes through Redis.  What must differ per
process is derived from its index (GANTRY_GATEWAY_WORKER_INDEX, set here): the gateway id and
the dispatcher's stable name (``worker_identity``), so a restarted worker takes back the async
work its predecessor at the same index held.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

log = logging.getLogger("gantry.gateway")

INDEX_ENV = "GANTRY_GATEWAY_WORKER_INDEX"   # set by the supervisor for each worker process
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before restarting a worker that died, by deaths in a row
STABLE_AFTER = 30.0                         # a worker up this long resets its death count
STOP_GRACE = 10.0                           # seconds the workers get to stop before SIGKILL


def worker_identity(gateway_id: str, dispatch_id: str, workers: int, index: int | None) -> tuple[str, str]:
    """(gateway id, dispatcher name) of worker INDEX of WORKERS; unchanged for a lone gateway.
    An empty DISPATCH_ID stays empty (the dispatcher then names itself HOSTNAME:PORT), and the
    index is added to whichever name results (``worker_suffix``)."""
    if workers <= 1 or index is None:
        return gateway_id, dispatch_id
    suffix = worker_suffix(workers, index)
    return gateway_id + suffix, dispatch_id + suffix if dispatch_id else ""


def worker_suffix(workers: int, index: int | None) -> str:
    return f"-w{index}" if workers > 1 and index is not None else ""


def next_delay(deaths: int) -> float:
    """Seconds to wait before restarting a worker that died DEATHS times in a row (>= 1)."""
    return RESTART_BACKOFF[min(deaths, len(RESTART_BACKOFF)) - 1]


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    deaths: int = 0          # in a row, without STABLE_AFTER of uptime between
    restart_at: float = 0.0  # monotonic time of the next start, when proc is None


def supervise(workers: int, argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Run WORKERS gateway processes until SIGTERM or SIGINT, restarting any that dies (with a
    growing delay); then stop them all (SIGTERM, SIGKILL after STOP_GRACE).  ARGV: the command
    of one worker (default: this Python, ``-m gantry.gateway``)."""
    argv = argv or [sys.executable, "-m", "gantry.gateway"]
    base_env = dict(os.environ if env is None else env)
    stopping = False

    def _stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    pool = [_Worker(i) for i in range(workers)]
    try:
        while not stopping:
            now = time.monotonic()
            for w in pool:
                if w.proc is not None and w.proc.poll() is not None:
                    code = w.proc.returncode
                    w.deaths = 1 if now - w.started >= STABLE_AFTER else w.deaths + 1
                    w.proc, w.restart_at = None, now + next_delay(w.deaths)
                    log.warning("gateway worker exited; restarting it", extra={
                        "worker": w.index, "code": code, "in_s": next_delay(w.deaths)})
                if w.proc is None and now >= w.restart_at:
                    w.proc = subprocess.Popen(argv, env={**base_env, INDEX_ENV: str(w.index)})
                    w.started = now
            time.sleep(0.1)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        _stop_all([w.proc for w in pool if w.proc is not None])
    return 0


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

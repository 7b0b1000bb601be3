"""How many instances a function wants: pure functions of demand and time (no I/O).

    demand = sum(inflight + waiting) over fresh gateway load reports
    want   = clamp(ceil(demand / concurrency), min, max)
    target = the highest `want` observed during the last idle_timeout seconds

Scaling up follows `want` at once (target >= want); scaling down follows the window, so a
function with min 0 scales to zero idle_timeout after its last request.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Iterable

import msgpack


def demand_from_reports(reports: dict, now: float, fresh: float) -> int:
    """Sum inflight + waiting over reports (gateway id -> msgpack [inflight, waiting,
    last_request, reported]) made within ``fresh`` seconds of ``now`` (wall time).
    Malformed reports count as nothing."""
    total = 0
    for raw in reports.values():
        try:
            inflight, waiting, _last, reported = msgpack.unpackb(raw, raw=False)[:4]
            if now - float(reported) <= fresh:
                total += max(0, int(inflight)) + max(0, int(waiting))
        except (ValueError, TypeError, msgpack.UnpackException):
            continue
    return total


def last_request(reports: dict) -> float:
    """The latest last-request wall time over all gateways' reports (0.0: none)."""
    latest = 0.0
    for raw in reports.values():
        try:
            latest = max(latest, float(msgpack.unpackb(raw, raw=False)[2]))
        except (ValueError, TypeError, IndexError, msgpack.UnpackException):
            continue
    return latest


def compute_want(demand: int, concurrency: int, minimum: int, maximum: int) -> int:
    """ceil(demand / concurrency) clamped to [minimum, maximum]."""
    needed = math.ceil(demand / max(1, concurrency)) if demand > 0 else 0
    return max(minimum, min(maximum, needed))


class WantWindow:
    """Sliding maximum of `want` samples over the last ``window`` seconds.

    A monotonic deque: each sample drops the smaller ones before it, so the front is the
    maximum and memory stays bounded by the number of distinct descending values.
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    def seed(self, now: float, value: int) -> None:
        """Start from ``value`` as if it had been wanted at ``now`` (a fresh leader assumes
        the instances it finds were wanted, so it scales down no sooner than idle_timeout)."""
        self._samples.clear()
        self._samples.append((now, value))

    def observe(self, now: float, want: int, window: float) -> int:
        """Record ``want`` at ``now``; return the highest want seen within ``window``."""
        while self._samples and self._samples[-1][1] <= want:
            self._samples.pop()
        self._samples.append((now, want))
        while self._samples[0][0] < now - window:
            self._samples.popleft()
        return self._samples[0][1]


def window_max(samples: Iterable[tuple[float, int]], now: float, window: float) -> int:
    """The reference definition WantWindow implements (for tests): max want within window."""
    return max((w for t, w in samples if t >= now - window), default=0)

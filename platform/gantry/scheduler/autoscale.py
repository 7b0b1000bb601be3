"""How many instances a function wants: pure functions of demand and time (no I/O).

    demand = sum(inflight + waiting) over fresh gateway load reports
    floor  = max(min, warm while its hold lasts), at most max
    want   = clamp(ceil(demand / (concurrency x target_utilization)), floor, max)
    window = the highest `want` observed during the last idle_timeout seconds
    target = ``decide``: the window, unless a cooldown holds the last target

Scaling up follows `want` at once (window >= want) unless scale_up_cooldown has not passed
since the last scale-up; scaling down follows the window, and not within
scale_down_cooldown of the last change either way.  With the defaults (utilization 1, no
cooldowns) target == window: a function with min 0 scales to zero idle_timeout after its
last request.  Every decision carries its reason (docs/control-plane.md "Scaling").
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
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


def needed_for(demand: int, concurrency: int, utilization: float = 1.0) -> int:
    """ceil(demand / (concurrency x utilization)): instances that run demand at the target
    utilization.  A hair below each whole number counts as it: 3 / (10 x 0.3) is 1, not 2."""
    if demand <= 0:
        return 0
    return max(1, math.ceil(demand / (max(1, concurrency) * utilization) - 1e-9))


def compute_want(demand: int, concurrency: int, minimum: int, maximum: int, utilization: float = 1.0) -> int:
    """ceil(demand / (concurrency x utilization)) clamped to [minimum, maximum]."""
    return max(minimum, min(maximum, needed_for(demand, concurrency, utilization)))


@dataclass(frozen=True)
class Policy:
    """What decides one function's target: its spec's [scaling], the `gantry scale` override
    (in ``minimum``) and a `gantry warm` hold still in force (``warm``, 0: none)."""
    minimum: int
    maximum: int
    concurrency: int
    utilization: float = 1.0
    up_cooldown: float = 0.0
    down_cooldown: float = 0.0
    idle_timeout: float = 60.0
    warm: int = 0

    @property
    def floor(self) -> int:
        return min(self.maximum, max(self.minimum, self.warm))

    def want(self, demand: int) -> int:
        return compute_want(demand, self.concurrency, self.floor, self.maximum, self.utilization)


@dataclass(frozen=True)
class Memory:
    """What a decision remembers (kept in the function record, so a new leader keeps it):
    the last target, and the wall times of the last change up and of the last change."""
    target: int
    up_at: float = 0.0
    changed_at: float = 0.0


@dataclass(frozen=True)
class Decision:
    target: int
    reason: str              # "" when nothing changed and nothing was held
    memory: Memory           # what to remember after it
    changed: bool = False    # target differs from the last one
    wanted: int = 0          # what the window asked for (== target unless held)
    held: str = ""           # the cooldown that held a change back ("" none)


def explain(demand: int, policy: Policy, target: int) -> str:
    """Why ``target``: the demand term, the floor or max that bound it, or the window."""
    needed = needed_for(demand, policy.concurrency, policy.utilization)
    term = f"{demand} in flight / ({policy.concurrency} x {policy.utilization:g})"
    if target == policy.floor and policy.floor > 0 and needed <= target:
        if policy.warm >= policy.minimum and policy.warm > 0:
            return f"warm {policy.warm}"
        return f"min_instances {policy.minimum}"
    if target == needed:
        return term
    if target == policy.maximum and needed > target:
        return f"{term} = {needed}, capped at max_instances {policy.maximum}"
    return f"the highest want of the last {policy.idle_timeout:g}s ({term} now)"


def decide(memory: Memory, demand: int, window: int, policy: Policy, now: float) -> Decision:
    """The target of one function: ``window`` (the idle window's highest want, WantWindow)
    unless a cooldown holds ``memory.target``.  Bounds are never held back: the target is
    always within [floor, max], whatever the cooldowns say."""
    previous, wanted = memory.target, window
    low, high = policy.floor, policy.maximum
    target, held, left = wanted, "", 0.0
    if wanted > previous and policy.up_cooldown > 0 and memory.up_at > 0:
        left = memory.up_at + policy.up_cooldown - now
        if left > 0:
            target, held = previous, "scale_up_cooldown"
    elif wanted < previous and policy.down_cooldown > 0 and memory.changed_at > 0:
        left = memory.changed_at + policy.down_cooldown - now
        if left > 0:
            target, held = previous, "scale_down_cooldown"
    target = max(low, min(high, target))
    if target == wanted:
        held = ""
    if target == previous:
        reason = (f"held by {held} ({math.ceil(left)}s left): want {wanted}, "
                  f"{explain(demand, policy, wanted)}" if held else "")
        return Decision(target, reason, memory, False, wanted, held)
    way = "up" if target > previous else "down"
    reason = f"scale {way} {previous}->{target}: {explain(demand, policy, target)}"
    if held and target != wanted:        # a bound moved the target; a cooldown holds the rest
        reason += f" (held by {held}, {math.ceil(left)}s left: want {wanted})"
    after = Memory(target, now if way == "up" else memory.up_at, now)
    return Decision(target, reason, after, True, wanted, held)


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

"""The pure decisions of [[schedules]]: which tick of a cron schedule to fire now, given the
schedule's record (keys.schedule) and the time.  No I/O here (gantry.scheduler.ticker fires,
gantry.scheduler.schedulestore reads and writes).

Ticks are whole unix seconds, computed by croniter in the schedule's time zone (zoneinfo).
Across a daylight-saving change croniter's rule holds: a wall time that does not exist that
day (02:30 when clocks go from 02:00 to 03:00) fires at the first time after the gap (03:00),
and one that happens twice (02:30 when clocks go back) fires both times.

The missed-tick policy (docs/async.md):
- a schedule first seen (its function's first deploy, or a schedule added or whose cron or
  time zone changed) starts from now: ticks before that are never fired (no back-fill);
- a tick at most ON_TIME seconds late is on time: every such tick fires, in order (a leader
  change or a slow pass delays ticks by a few seconds, it does not skip them);
- ticks older than that were missed while the platform was down: only the latest of them
  fires, once (Kubernetes CronJob's single catch-up), and only if it is at most the catch-up
  window old (GANTRY_SCHEDULE_CATCHUP); every other missed tick is skipped and counted in
  the record's ``missed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from ..manifest import Schedule

ON_TIME = 30.0          # seconds a tick may be late and still be on time
MAX_COUNTED = 10_000    # missed ticks counted per decision at most (a long outage of a per-second cron)


def signature(schedule: Schedule) -> str:
    """What a record's mark was made under: a new cron or time zone starts afresh."""
    return f"{schedule.cron}|{schedule.timezone}"


def _ticks(schedule: Schedule, at: float) -> croniter:
    # from the middle of AT's second: get_next is then the first tick after AT, get_prev the
    # last at or before it (ticks fall on whole seconds)
    return croniter(schedule.cron, datetime.fromtimestamp(math.floor(at) + 0.5, ZoneInfo(schedule.timezone)))


def next_tick(schedule: Schedule, after: float) -> int:
    """The first tick strictly after AFTER."""
    return int(_ticks(schedule, after).get_next(float))


def latest_tick(schedule: Schedule, at: float) -> int:
    """The last tick at or before AT."""
    return int(_ticks(schedule, at).get_prev(float))


def count_ticks(schedule: Schedule, after: float, until: float, cap: int = MAX_COUNTED) -> int:
    """How many ticks fall in (AFTER, UNTIL], counted up to CAP."""
    it, n = _ticks(schedule, after), 0
    while n < cap and it.get_next(float) <= until:
        n += 1
    return n


@dataclass(frozen=True)
class Record:
    """A decoded keys.schedule record (an absent one has ``claimed`` None)."""
    claimed: int | None = None
    pending: str = ""
    fired: int | None = None
    invocation: str = ""
    missed: int = 0
    next: int | None = None
    sig: str = ""

    @classmethod
    def from_hash(cls, raw: dict) -> "Record":
        text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else str(v))
                for k, v in raw.items()}

        def num(name: str) -> int | None:
            return int(text[name]) if text.get(name) else None

        return cls(claimed=num("claimed"), pending=text.get("pending", ""), fired=num("fired"),
                   invocation=text.get("invocation", ""), missed=num("missed") or 0, next=num("next"),
                   sig=text.get("sig", ""))


@dataclass(frozen=True)
class Decision:
    """Move the record's mark to ``mark``; fire the tick ``fire`` (== mark) unless None;
    add ``missed`` to the skipped count.  ``next`` is the first tick after the mark."""
    mark: int
    fire: int | None
    missed: int
    next: int


def decide(schedule: Schedule, record: Record, now: float, catchup: float) -> Decision | None:
    """What to do for SCHEDULE at wall time NOW (None: nothing is due).  Called again after
    each claim, it yields the on-time ticks one by one."""
    if record.claimed is None or record.sig != signature(schedule):
        mark = math.floor(now)                       # first seen: start from now
        return Decision(mark=mark, fire=None, missed=0, next=next_tick(schedule, mark))
    due = next_tick(schedule, record.claimed)
    if due > now:
        return None
    if due >= now - ON_TIME:
        return Decision(mark=due, fire=due, missed=0, next=next_tick(schedule, due))
    latest = latest_tick(schedule, now)               # the platform was down: catch up once
    skipped = count_ticks(schedule, record.claimed, latest) - 1
    if latest >= now - catchup:
        return Decision(mark=latest, fire=latest, missed=skipped, next=next_tick(schedule, latest))
    return Decision(mark=latest, fire=None, missed=skipped + 1, next=next_tick(schedule, latest))


def resubmit(record: Record, now: float, retention: float) -> bool:
    """A claimed tick whose submit was not recorded (its leader stopped in between) is
    submitted again while its idempotency key is surely remembered (RETENTION after the
    tick; the key was set at most then).  False: it is abandoned (or there is none)."""
    return bool(record.pending) and record.claimed is not None and now - record.claimed < retention


def idempotency_key(schedule: Schedule, tick: int) -> str:
    return f"schedule:{schedule.name}:{tick}"


def iso(tick: int | None, timezone: str = "UTC") -> str | None:
    """A tick as ISO-8601 in the schedule's time zone (with its offset)."""
    return None if tick is None else datetime.fromtimestamp(tick, ZoneInfo(timezone)).isoformat()

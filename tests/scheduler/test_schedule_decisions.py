"""The pure tick decisions of [[schedules]] (gantry.scheduler.schedules): first deploy, on-time
ticks, the single catch-up after an outage, the catch-up window, a changed cron, time zones
and a daylight-saving change."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from gantry.manifest import Schedule
from gantry.scheduler.schedules import (ON_TIME, Decision, Record, count_ticks, decide, iso, latest_tick,
                                        next_tick, resubmit, signature)

HOUR = 3600
T0 = int(datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp())   # a whole hour, UTC
EVERY_MINUTE = Schedule(name="m", cron="* * * * *")
HOURLY = Schedule(name="h", cron="0 * * * *")


def seen(schedule: Schedule, mark: int, **kw) -> Record:
    return Record(claimed=mark, sig=signature(schedule), **kw)


def test_first_deploy_starts_from_now_without_back_fill():
    d = decide(HOURLY, Record(), T0 + 1800.7, catchup=HOUR)
    assert d == Decision(mark=T0 + 1800, fire=None, missed=0, next=T0 + HOUR)
    # exactly on a tick: that tick is "before now" too (the mark is now): not fired
    assert decide(HOURLY, Record(), T0, catchup=HOUR).fire is None


def test_nothing_due_before_the_next_tick():
    assert decide(HOURLY, seen(HOURLY, T0), T0 + HOUR - 1, catchup=HOUR) is None


def test_on_time_ticks_fire_one_by_one_in_order():
    every_second = Schedule(name="s", cron="* * * * * *")
    record, fired = seen(every_second, T0), []
    for _ in range(10):                              # a pass five seconds late: all five fire
        d = decide(every_second, record, T0 + 5.5, catchup=0)
        if d is None:
            break
        assert d.missed == 0
        fired.append(d.fire)
        record = seen(every_second, d.mark)
    assert fired == [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    # a minute tick ON_TIME late is still on time, even with no catch-up at all
    d = decide(EVERY_MINUTE, seen(EVERY_MINUTE, T0), T0 + 60 + ON_TIME, catchup=0)
    assert d == Decision(mark=T0 + 60, fire=T0 + 60, missed=0, next=T0 + 120)


def test_ticks_missed_while_down_fire_once_the_latest_and_count_the_others():
    # down from T0 to T0 + 10 min + 20 s: ten ticks missed; only T0+600 fires, nine are counted
    d = decide(EVERY_MINUTE, seen(EVERY_MINUTE, T0), T0 + 620, catchup=HOUR)
    assert d == Decision(mark=T0 + 600, fire=T0 + 600, missed=9, next=T0 + 660)


def test_a_missed_tick_older_than_the_catch_up_window_is_skipped_and_counted():
    # hourly, down three and a half hours: T0+1h..T0+3h missed, the latest 30 min old
    now = T0 + 3 * HOUR + 1800
    assert decide(HOURLY, seen(HOURLY, T0), now, catchup=HOUR) == Decision(
        mark=T0 + 3 * HOUR, fire=T0 + 3 * HOUR, missed=2, next=T0 + 4 * HOUR)
    assert decide(HOURLY, seen(HOURLY, T0), now, catchup=600) == Decision(
        mark=T0 + 3 * HOUR, fire=None, missed=3, next=T0 + 4 * HOUR)
    assert decide(HOURLY, seen(HOURLY, T0), now, catchup=0).fire is None     # 0: never catch up


def test_a_changed_cron_or_time_zone_starts_afresh():
    old = seen(HOURLY, T0)
    for changed in (Schedule(name="h", cron="30 * * * *"),
                    Schedule(name="h", cron="0 * * * *", timezone="Asia/Kolkata")):
        d = decide(changed, old, T0 + 5 * HOUR + 1, catchup=HOUR)
        assert d is not None and d.fire is None and d.missed == 0 and d.mark == T0 + 5 * HOUR + 1


def test_counting_is_bounded():
    every_second = Schedule(name="s", cron="* * * * * *")
    assert count_ticks(every_second, T0, T0 + 10) == 10
    assert count_ticks(every_second, T0, T0 + 10**6, cap=50) == 50


def test_time_zone_of_a_daily_tick():
    nine = Schedule(name="d", cron="0 9 * * *", timezone="Asia/Tokyo")        # UTC+9, no DST
    assert next_tick(nine, T0) == int(datetime(2024, 5, 2, 0, 0, tzinfo=timezone.utc).timestamp())
    assert iso(next_tick(nine, T0), nine.timezone) == "2024-05-02T09:00:00+09:00"


def test_daylight_saving_changes_in_europe_paris():
    paris = ZoneInfo("Europe/Paris")
    at = lambda *a: int(datetime(*a, tzinfo=paris).timestamp())   # noqa: E731
    daily = Schedule(name="d", cron="0 9 * * *", timezone="Europe/Paris")
    # 31 March 2024, 02:00 -> 03:00: 09:00 stays 09:00 local, one hour earlier in UTC
    assert next_tick(daily, at(2024, 3, 30, 12, 0)) == at(2024, 3, 31, 9, 0)
    assert at(2024, 3, 31, 9, 0) - at(2024, 3, 30, 9, 0) == 23 * HOUR
    # a wall time that does not exist that day fires at the end of the gap (03:00 CEST)
    gap = Schedule(name="g", cron="30 2 * * *", timezone="Europe/Paris")
    assert iso(next_tick(gap, at(2024, 3, 30, 12, 0)), gap.timezone) == "2024-03-31T03:00:00+02:00"
    # 27 October 2024, 03:00 -> 02:00: 02:30 happens twice and fires twice, an hour apart
    first = next_tick(gap, at(2024, 10, 26, 12, 0))
    second = next_tick(gap, first)
    assert (iso(first, gap.timezone), iso(second, gap.timezone)) == (
        "2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00")
    assert second - first == HOUR
    # a decision across the spring change: missed while down over it, the latest fires once
    d = decide(daily, seen(daily, at(2024, 3, 30, 9, 0)), at(2024, 3, 31, 9, 10), catchup=HOUR)
    assert d == Decision(mark=at(2024, 3, 31, 9, 0), fire=at(2024, 3, 31, 9, 0), missed=0,
                         next=at(2024, 4, 1, 9, 0))
    assert latest_tick(daily, at(2024, 3, 31, 8, 59)) == at(2024, 3, 30, 9, 0)


def test_a_pending_claim_is_submitted_again_only_while_its_key_is_remembered():
    pending = seen(HOURLY, T0, pending="a" * 32)
    assert resubmit(pending, T0 + 10, retention=HOUR)
    assert not resubmit(pending, T0 + 2 * HOUR, retention=HOUR)
    assert not resubmit(seen(HOURLY, T0), T0 + 10, retention=HOUR)

"""The runtime's ready report on the worker's side (worker.readyreport): the log follower
hands the runtime's ready line to the start that waits for it, once; the wait between two
probes ends at the report, or after its timeout when none comes."""
from __future__ import annotations

import asyncio
import json
import threading
import time

from gantry.worker.logship import LogFollower, LogShipper
from gantry.worker.readyreport import ReadyReport

READY = json.dumps({"ts": "2026-01-01T00:00:00.000+00:00", "level": "info", "msg": "ready", "function": "f",
                    "logger": "gantry.runtime", "import_ms": 1.2})
STAMP = "2026-01-01T00:00:00.{:09d}Z "


def _follower(calls: list[int]) -> tuple[LogFollower, LogShipper]:
    sink = LogShipper(100)
    return LogFollower(None, "cid", "f", "i1", sink, on_ready=lambda: calls.append(1)), sink


def test_the_ready_line_is_reported_once_and_still_shipped():
    calls: list[int] = []
    follower, sink = _follower(calls)
    lines = ['{"msg": "start", "logger": "gantry.runtime"}', 'print("ready")',
             '{"msg": "ready", "logger": "gantry.function"}', READY, READY]
    for n, line in enumerate(lines, 1):
        follower._line((STAMP.format(n) + line).encode())
    assert calls == [1]
    shipped = [sink._queue.get_nowait()[2] for _ in range(sink._queue.qsize())]
    assert shipped == lines


def test_without_a_callback_nothing_is_reported():
    sink = LogShipper(100)
    follower = LogFollower(None, "cid", "f", "i1", sink)
    follower._line((STAMP.format(1) + READY).encode())
    assert sink._queue.qsize() == 1


async def test_a_report_from_another_thread_ends_the_wait_at_once_and_is_used_up():
    report = ReadyReport(asyncio.get_running_loop())
    t0 = time.monotonic()
    assert await report.wait(0.05) is False           # no report: the whole timeout
    assert time.monotonic() - t0 >= 0.045
    threading.Timer(0.02, report.notify).start()
    t1 = time.monotonic()
    assert await report.wait(5.0) is True             # woken by the report, not the timeout
    assert time.monotonic() - t1 < 1.0
    assert await report.wait(0.01) is False           # used up: the next wait is a plain one


async def test_a_report_that_came_before_the_wait_is_not_lost():
    report = ReadyReport(asyncio.get_running_loop())
    await asyncio.to_thread(report.notify)
    await asyncio.sleep(0)                             # the loop runs the threadsafe callback
    t0 = time.monotonic()
    assert await report.wait(5.0) is True and time.monotonic() - t0 < 0.5

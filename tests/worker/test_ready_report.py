"""The runtime's ready report on the worker's side (worker.readyreport): the log follower
hands the runtime's ready line to the start that waits for it, once; the wait between two
probes ends at the report, or after its timeout when none comes; and, with the real Docker
engine and Redis, a start turns ready on the report."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest
from worker_helpers import agent_for, place, push, record, start_cmd

from gantry import state as st
from gantry.worker import commands
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


@pytest.mark.docker
@pytest.mark.redis
@pytest.mark.timeout(60, func_only=True)
async def test_a_start_is_ready_on_the_runtimes_report_not_on_the_next_tick(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec, monkeypatch, caplog):
    # Ticks 20 s apart: the first probe (at once) finds nothing listening yet, and only the
    # ready line, read from the container's real log stream, can bring the next one sooner.
    monkeypatch.setattr(commands, "FAST_PROBE", 20.0)
    caplog.set_level(logging.INFO, logger="gantry.worker")
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        iid = place(redis_client, node_id)
        push(redis_client, node_id, start_cmd(iid, kinds_spec, kinds_image))
        t0 = time.monotonic()
        await agent._iteration()          # the start command, run to its end
        elapsed = time.monotonic() - t0
        assert record(redis_client, iid).state == st.READY
        assert elapsed < 15, elapsed      # not the 20 s tick
        ready = [r for r in caplog.records if r.getMessage() == "instance ready" and r.instance == iid]
        assert [r.ready_report for r in ready] == [True]

"""The one flush loop behind the gateway's metrics and usage writes (gateway.background)."""
import asyncio

from gantry.gateway.background import flush_until_stopped, flushing


def test_flushes_each_interval_and_once_more_on_stop():
    calls, ticks = [], []

    async def flush():
        calls.append(asyncio.get_running_loop().time())

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(flush_until_stopped(flush, 0.05, stop, "test", lambda: ticks.append(1), 0.01))
        await asyncio.sleep(0.23)
        before = len(calls)
        stop.set()
        await task
        return before

    before = asyncio.run(main())
    assert 3 <= before <= 5           # every 0.05 s over 0.23 s, a timer's slack either way
    assert len(calls) == before + 1   # and the last one at stop
    assert len(ticks) >= 3 * before   # ticks every 0.01 s in between


def test_a_failed_flush_is_logged_and_the_loop_goes_on(caplog):
    outcomes = iter([RuntimeError("redis away"), None, None, None, None, None, None, None])
    done = []

    async def flush():
        exc = next(outcomes)
        if exc:
            raise exc
        done.append(1)

    async def main():
        async with flushing(flush, 0.02, "test", lambda: {}):
            await asyncio.sleep(0.09)

    asyncio.run(main())
    assert "test flush failed" in caplog.text
    assert done                       # later flushes ran, the last one at the end of the block


def test_the_last_flush_at_stop_runs_whole():
    finished = []

    async def slow_flush():
        await asyncio.sleep(0.05)
        finished.append(1)

    async def main():
        async with flushing(slow_flush, 10.0, "test", lambda: {}):
            pass                      # stop at once: the final flush runs whole

    asyncio.run(main())
    assert finished == [1]

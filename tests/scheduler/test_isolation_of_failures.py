"""One function whose reconcile fails (a spec written into Redis past validation, corrupt
bytes, a bug) is marked and logged once; every other function is still scheduled in the
same passes.  Before: the first bad function raised out of the pass, every pass, and a
killed instance of a healthy function sorted after it was never replaced."""
from __future__ import annotations

import logging

import msgpack
import pytest

from gantry import keys, state
from gantry.scheduler import reconcile as reconcile_module

from .fakes import FakeWorker, add_node, commands, deploy, field, instances, scheduler, set_state, settle

pytestmark = pytest.mark.timeout(60)

BAD = "a-bad"           # sorts before "echo": the pass meets it first
LOGGER = "gantry.scheduler.reconcile"


async def _nan_cpu(r) -> None:
    key = keys.function_version(BAD, 1)
    spec = msgpack.unpackb(await r.hget(key, "spec"))
    spec["resources"]["cpu"] = float("nan")
    await r.hset(key, "spec", msgpack.packb(spec))


async def _corrupt(r) -> None:
    await r.hset(keys.function_version(BAD, 1), "spec", b"\xc1\xc1 not msgpack")


async def _two_healthy_one_bad(r, spoil):
    """echo runs one ready instance; a-bad is deployed (and ran) before its record is spoiled."""
    await add_node(r, "n1")
    await deploy(r, "echo", min_instances=1)
    await deploy(r, BAD, min_instances=1)
    s, w = scheduler(r), FakeWorker(r, "n1")
    await settle(s, [w])
    assert [i.state for i in await instances(r, "echo")] == [state.READY]
    await spoil(r)
    return s, w


def _failures_logged(caplog, name: str) -> list[logging.LogRecord]:
    return [rec for rec in caplog.records
            if rec.name == LOGGER and rec.levelno >= logging.ERROR and name in rec.getMessage()]


@pytest.mark.asyncio
@pytest.mark.parametrize("spoil, expected", [(_nan_cpu, "resources.cpu"), (_corrupt, "spec: not readable")],
                         ids=["cpu-nan", "corrupt-msgpack"])
async def test_a_killed_instance_is_replaced_next_to_an_unreadable_spec(aredis, caplog,
                                                                         spoil, expected):
    r = aredis
    s, w = await _two_healthy_one_bad(r, spoil)
    victim = (await instances(r, "echo"))[0].id
    await set_state(r, victim, state.FAILED, "exited with 137")      # killed
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(5):                                               # five full passes
        await s._iteration()
        await w.step()
    after = await instances(r, "echo")
    assert victim not in {i.id for i in after}
    assert [i.state for i in after] == [state.READY]                 # replaced
    reason = await field(r, BAD, "pending_reason")
    assert reason is not None and reason.startswith("not reconciled: ") and expected in reason
    logged = _failures_logged(caplog, BAD)
    assert len(logged) == 1, [rec.getMessage() for rec in logged]    # once, not once per pass
    assert expected in logged[0].getMessage()


@pytest.mark.asyncio
async def test_the_demand_path_reconciles_the_others_too(aredis):
    r = aredis
    s, w = await _two_healthy_one_bad(r, _nan_cpu)
    await r.hset(keys.function("echo"), "min_override", 2)            # `gantry scale echo 2`
    await s.reconcile_functions([BAD, "echo"])
    starts = [c for c in await commands(r, "n1") if c["op"] == "start"]
    assert len(starts) == 1 and starts[0]["instance"].startswith("echo-")
    assert "resources.cpu" in await field(r, BAD, "pending_reason")


@pytest.mark.asyncio
async def test_a_new_error_is_logged_again_and_a_fixed_record_clears_the_mark(aredis, caplog):
    r = aredis
    s, w = await _two_healthy_one_bad(r, _nan_cpu)
    caplog.set_level(logging.INFO, logger=LOGGER)
    await settle(s, [w])
    await _corrupt(r)                                                # a different failure
    await settle(s, [w])
    assert len(_failures_logged(caplog, BAD)) == 2
    await deploy(r, BAD, version=2, min_instances=1)                  # a good version fixes it
    await settle(s, [w])
    assert await field(r, BAD, "pending_reason") is None
    assert any("reconciled again" in rec.getMessage() for rec in caplog.records)
    assert len(_failures_logged(caplog, BAD)) == 2


@pytest.mark.asyncio
async def test_a_bug_in_one_reconcile_is_logged_once_with_its_traceback(aredis, caplog,
                                                                          monkeypatch):
    r = aredis
    s, w = await _two_healthy_one_bad(r, lambda r: _noop())
    real = reconcile_module.compute_want

    def compute_want(demand, concurrency, minimum, maximum, *rest):
        if minimum == 3:
            raise ZeroDivisionError("a bug")
        return real(demand, concurrency, minimum, maximum, *rest)

    monkeypatch.setattr(reconcile_module, "compute_want", compute_want)
    await r.hset(keys.function(BAD), "min_override", 3)
    await r.hset(keys.function("echo"), "min_override", 2)
    caplog.set_level(logging.INFO, logger=LOGGER)
    await settle(s, [w])
    assert len(await instances(r, "echo", live_only=True)) == 2
    logged = _failures_logged(caplog, BAD)
    assert len(logged) == 1 and logged[0].exc_info and "ZeroDivisionError: a bug" in logged[0].getMessage()
    assert await field(r, BAD, "pending_reason") == "not reconciled: ZeroDivisionError: a bug"


async def _noop() -> None:
    return None

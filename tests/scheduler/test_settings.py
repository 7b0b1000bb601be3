"""SchedulerSettings and small housekeeping."""
from __future__ import annotations

import pytest

from gantry import keys
from gantry.scheduler import SchedulerSettings

from .fakes import add_node, deploy, instances, scheduler


def test_settings_from_env_and_overrides():
    s = SchedulerSettings.from_env({"GANTRY_SCHEDULER_ID": "a", "GANTRY_SCHEDULER_INTERVAL": "0.5",
                                    "GANTRY_SCHEDULER_LEASE_MS": "6000",
                                    "GANTRY_SCHEDULER_START_TIMEOUT": "90"}, node_grace=10.0)
    assert (s.holder_id, s.interval, s.lease_ms, s.start_timeout, s.node_grace, s.load_fresh) == (
        "a", 0.5, 6000, 90.0, 10.0, 5.0)
    assert SchedulerSettings.from_env({}).holder_id            # generated, unique per process
    with pytest.raises(ValueError, match="GANTRY_SCHEDULER_INTERVAL"):
        SchedulerSettings.from_env({"GANTRY_SCHEDULER_INTERVAL": "fast"})
    with pytest.raises(ValueError):
        SchedulerSettings(holder_id="a", interval=1.0, lease_ms=1000)   # lease under 3 intervals


def test_schedule_settings_from_env():
    s = SchedulerSettings.from_env({"GANTRY_SCHEDULE_CATCHUP": "0", "GANTRY_IDEMPOTENCY_TTL": "2h"})
    assert (s.schedule_catchup, s.async_retention) == (0.0, 7200.0)
    s = SchedulerSettings.from_env({})
    assert (s.schedule_catchup, s.async_retention) == (3600.0, 86400.0)
    with pytest.raises(ValueError, match="GANTRY_IDEMPOTENCY_TTL"):
        SchedulerSettings.from_env({"GANTRY_IDEMPOTENCY_TTL": "0"})
    with pytest.raises(ValueError, match="GANTRY_SCHEDULE_CATCHUP"):
        SchedulerSettings.from_env({"GANTRY_SCHEDULE_CATCHUP": "-1m"})


@pytest.mark.timeout(30)
async def test_set_members_without_records_are_dropped(aredis):
    r = aredis
    await add_node(r, "n1")
    await deploy(r, "echo")
    await r.sadd(keys.node_instances("n1"), "ghost")
    await r.sadd(keys.function_instances("echo"), "ghost")
    await scheduler(r)._iteration()
    assert not await r.exists(keys.node_instances("n1"), keys.function_instances("echo"))
    assert await instances(r, "echo") == []

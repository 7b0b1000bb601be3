"""pause and unpause against the real Docker engine and Redis (a missing one fails): a pause
waits for in-flight work, freezes the container, and an unpause brings the same container
back to ready and invokable; both idempotent; stop and shutdown handle paused containers."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from gantry import keys
from gantry import state as st

from worker_helpers import agent_for, node_containers, place, post, push, record, start_cmd, until

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(90, func_only=True)]


def _as_scheduler(redis_client, iid: str, state: str, **fields) -> None:
    """What the scheduler's fenced pause/resume/drain write to the record before the command."""
    redis_client.hset(keys.instance(iid), mapping={"state": state, **{k: str(v) for k, v in fields.items()}})


def _status(docker_client, container_id: str) -> str:
    return docker_client.containers.get(container_id).status


async def _ready(agent, redis_client, node_id, iid, spec, image):
    push(redis_client, node_id, start_cmd(iid, spec, image))
    return await until(agent, lambda: (r := record(redis_client, iid)).state == st.READY and r, "ready")


async def test_pause_waits_for_in_flight_work_then_unpause_serves_from_the_same_container(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    slow = dataclasses.replace(kinds_spec, handler="main:slow")

    async with agent_for(redis_url, docker_client, node_id, drain_grace=5.0) as agent:
        await agent.register()
        iid = place(redis_client, node_id)
        inst = await _ready(agent, redis_client, node_id, iid, slow, kinds_image)
        [container] = node_containers(docker_client, node_id)

        call = asyncio.create_task(asyncio.to_thread(post, inst, {"seconds": 1.0}))
        await asyncio.sleep(0.3)                          # the invocation is in flight
        _as_scheduler(redis_client, iid, st.PAUSING, paused_at=time.time())
        push(redis_client, node_id, st.command("pause", iid, 1))
        t0 = time.monotonic()
        await agent._iteration()
        waited = time.monotonic() - t0
        assert call.done(), "paused before the in-flight invocation finished"
        assert await call == (200, {"slept": 1.0})
        assert waited >= 0.5, waited
        assert record(redis_client, iid).state == st.PAUSED
        assert _status(docker_client, container.id) == "paused"

        push(redis_client, node_id, st.command("pause", iid, 1))          # again: nothing changes
        for _ in range(4):                                                # health rounds skip it
            await agent._iteration()
            await asyncio.sleep(0.15)
        assert record(redis_client, iid).state == st.PAUSED
        assert _status(docker_client, container.id) == "paused"

        _as_scheduler(redis_client, iid, st.RESUMING)
        push(redis_client, node_id, st.command("unpause", iid, 1))
        t0 = time.perf_counter()
        await agent._iteration()
        resumed = time.perf_counter() - t0
        print(f"unpause -> ready: {resumed * 1000:.1f} ms")
        after = record(redis_client, iid)
        assert after.state == st.READY and after.reason == "" and after.port == inst.port
        assert _status(docker_client, container.id) == "running"
        assert [c.id for c in node_containers(docker_client, node_id)] == [container.id]
        assert await asyncio.to_thread(post, inst, {"seconds": 0}) == (200, {"slept": 0})

        push(redis_client, node_id, st.command("unpause", iid, 1))        # ready: left alone
        await agent._iteration()
        assert record(redis_client, iid).state == st.READY
        _as_scheduler(redis_client, iid, st.RESUMING)                     # running: only probed
        push(redis_client, node_id, st.command("unpause", iid, 1))
        await agent._iteration()
        assert record(redis_client, iid).state == st.READY
        assert _status(docker_client, container.id) == "running"


async def test_a_drain_overtaking_a_pause_stops_and_shutdown_removes_paused_containers(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    slow = dataclasses.replace(kinds_spec, handler="main:slow")

    async with agent_for(redis_url, docker_client, node_id, drain_grace=5.0) as agent:
        await agent.register()
        a, b = place(redis_client, node_id), place(redis_client, node_id)
        inst_a = await _ready(agent, redis_client, node_id, a, slow, kinds_image)
        await _ready(agent, redis_client, node_id, b, slow, kinds_image)

        call = asyncio.create_task(asyncio.to_thread(post, inst_a, {"seconds": 1.0}))
        await asyncio.sleep(0.3)
        _as_scheduler(redis_client, a, st.PAUSING, paused_at=time.time())
        push(redis_client, node_id, st.command("pause", a, 1))
        pausing = asyncio.create_task(agent._iteration())
        await asyncio.sleep(0.2)                          # the pause waits for the call ...
        _as_scheduler(redis_client, a, st.DRAINING)       # ... and a drain overtakes it
        push(redis_client, node_id, st.command("stop", a, 1))
        await pausing
        await agent._iteration()
        assert await call == (200, {"slept": 1.0})
        assert record(redis_client, a).state == st.STOPPED

        _as_scheduler(redis_client, b, st.PAUSING, paused_at=time.time())
        push(redis_client, node_id, st.command("pause", b, 1))
        await agent._iteration()
        assert record(redis_client, b).state == st.PAUSED
        [container] = node_containers(docker_client, node_id)
        assert container.status == "paused"
        agent.forget(b)                                   # as after an agent restart: re-adopted
        await agent.register()
        assert b in agent.followers
        await agent.shutdown(remove_containers=True)
        assert node_containers(docker_client, node_id) == []
        assert record(redis_client, b).state == st.STOPPED


async def test_pause_or_unpause_of_a_vanished_container_fails_the_instance(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        a, b = place(redis_client, node_id), place(redis_client, node_id)
        await _ready(agent, redis_client, node_id, a, kinds_spec, kinds_image)
        await _ready(agent, redis_client, node_id, b, kinds_spec, kinds_image)
        by_instance = {c.labels["gantry.instance"]: c for c in node_containers(docker_client, node_id)}

        _as_scheduler(redis_client, a, st.PAUSING, paused_at=time.time())
        push(redis_client, node_id, st.command("pause", a, 1))
        await agent._iteration()
        assert record(redis_client, a).state == st.PAUSED
        by_instance[a].remove(force=True)                 # gone while paused
        _as_scheduler(redis_client, a, st.RESUMING)
        push(redis_client, node_id, st.command("unpause", a, 1))
        await agent._iteration()
        failed = record(redis_client, a)
        assert failed.state == st.FAILED and failed.reason == "container disappeared"

        by_instance[b].kill()                             # exited before its pause
        _as_scheduler(redis_client, b, st.PAUSING, paused_at=time.time())
        push(redis_client, node_id, st.command("pause", b, 1))
        await agent._iteration()
        failed = record(redis_client, b)
        assert failed.state == st.FAILED and "exited with code 137" in failed.reason, failed.reason

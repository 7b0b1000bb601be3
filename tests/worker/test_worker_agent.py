"""The worker agent against the real Docker engine and Redis (a missing one fails)."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from gantry import keys
from gantry import state as st
from gantry.worker.containerspec import LABEL_MANAGED

from worker_helpers import TEST_LABEL, agent_for, node_containers, place, post, push, record, start_cmd, until

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(60, func_only=True)]


def _log_lines(redis_client, function: str, instance_id: str) -> list[str]:
    return [fields[b"line"].decode() for _, fields in redis_client.xrange(keys.function_logs(function))
            if fields[b"instance"].decode() == instance_id]


async def test_register_and_heartbeat_ttl(redis_url, redis_client, docker_client, node_id):
    async with agent_for(redis_url, docker_client, node_id, cpu_millis=1500, memory=2**30) as agent:
        await agent.register()
        node = st.Node.from_hash(redis_client.hgetall(keys.node(node_id)))
        assert (node.id, node.host, node.cpu, node.memory) == (node_id, "127.0.0.1", 1500, 2**30)
        assert redis_client.sismember(keys.NODES, node_id)
        assert 0 < redis_client.pttl(keys.node_alive(node_id)) <= 1000
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:         # heartbeats outlive the 1 s TTL
            await agent._iteration()
            await asyncio.sleep(0.1)
        assert redis_client.exists(keys.node_alive(node_id))
        t1 = time.monotonic()                       # heartbeats stop: the key expires
        while redis_client.exists(keys.node_alive(node_id)) and time.monotonic() - t1 < 3:
            await asyncio.sleep(0.05)
        assert not redis_client.exists(keys.node_alive(node_id))
        assert 0.5 < time.monotonic() - t1 < 1.5


async def test_detected_capacity(redis_url, redis_client, docker_client, node_id):
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        node = st.Node.from_hash(redis_client.hgetall(keys.node(node_id)))
        assert node.cpu >= 1000 and node.memory > 2**28


async def test_start_is_hardened_idempotent_ready_invokable_logged_then_stop_drains(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        iid = place(redis_client, node_id, version=3, epoch=2)
        cmd = start_cmd(iid, kinds_spec, kinds_image, epoch=2, version=3)
        push(redis_client, node_id, cmd, cmd)          # the same command twice
        await agent._iteration()
        found = node_containers(docker_client, node_id)
        assert len(found) == 1
        c = found[0]
        assert c.labels[LABEL_MANAGED] == "1" and c.labels["gantry.instance"] == iid
        assert (c.labels["gantry.node"], c.labels["gantry.version"], c.labels["gantry.epoch"]) == (node_id, "3", "2")
        hc = c.attrs["HostConfig"]
        assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"]
        assert any(o.startswith("no-new-privileges") for o in hc["SecurityOpt"])
        assert hc["PidsLimit"] and hc["PidsLimit"] > 0
        assert hc["Memory"] == hc["MemorySwap"] == kinds_spec.resources.memory
        assert c.attrs["Config"]["User"] == "10001:10001"
        assert not hc.get("Binds") and not c.attrs.get("Mounts") and hc["Privileged"] is False
        assert all(b["HostIp"] == "127.0.0.1" for b in hc["PortBindings"]["8080/tcp"])

        inst = await until(agent, lambda: (r := record(redis_client, iid)) and r.state == st.READY and r,
                           "the instance to turn ready")
        assert inst.host == "127.0.0.1" and inst.port > 0
        status, data = await asyncio.to_thread(post, inst, {"hi": 1}, 10)
        assert status == 200 and data["event"] == {"hi": 1} and data["uid"] == 10001

        push(redis_client, node_id, cmd)               # a late duplicate changes nothing
        await agent._iteration()
        assert [x.id for x in node_containers(docker_client, node_id)] == [c.id]
        assert record(redis_client, iid).state == st.READY

        await until(agent, lambda: any('"ready"' in line for line in _log_lines(redis_client, "kinds", iid)),
                    "the runtime's ready line in the log stream")

        states = []
        pubsub = redis_client.pubsub()
        pubsub.subscribe(keys.EVENTS)
        push(redis_client, node_id, st.command("stop", iid, 2))
        await agent._iteration()
        assert record(redis_client, iid).state == st.STOPPED
        assert node_containers(docker_client, node_id) == []
        lines = _log_lines(redis_client, "kinds", iid)
        assert any('"draining"' in line for line in lines), lines   # SIGTERM: the runtime drained
        while (msg := pubsub.get_message(timeout=0.1)) is not None:
            if msg["type"] == "message":
                states.append(msg["data"])
        pubsub.close()
        assert states.count(b"inst:kinds") >= 2      # stopping, then stopped


async def test_stop_lets_in_flight_work_finish(redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    slow = dataclasses.replace(kinds_spec, handler="main:slow")

    async with agent_for(redis_url, docker_client, node_id) as agent:
        iid = place(redis_client, node_id)
        push(redis_client, node_id, start_cmd(iid, slow, kinds_image))
        inst = await until(agent, lambda: (r := record(redis_client, iid)).state == st.READY and r, "ready")
        call = asyncio.create_task(asyncio.to_thread(post, inst, {"seconds": 1.0}, 10))
        await asyncio.sleep(0.3)                       # the invocation is in flight
        push(redis_client, node_id, st.command("stop", iid, 1))
        await agent._iteration()
        assert await call == (200, {"slept": 1.0})    # SIGTERM waited for it
        assert record(redis_client, iid).state == st.STOPPED
        assert node_containers(docker_client, node_id) == []


async def test_stale_epochs_are_refused(redis_url, redis_client, docker_client, node_id):
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        iid = place(redis_client, node_id, epoch=5)
        redis_client.set(keys.LEADER_EPOCH, 5)
        push(redis_client, node_id, st.command("remove", iid, 4))        # below leader:epoch
        await agent._iteration()
        assert (agent.refused, agent.executed) == (1, 0)
        assert record(redis_client, iid).state == st.PENDING
        redis_client.delete(keys.LEADER_EPOCH)
        push(redis_client, node_id, st.command("remove", iid, 7), st.command("stop", iid, 6))
        await agent._iteration()                                          # 6 < 7, the highest seen
        assert (agent.refused, agent.executed, agent.max_epoch) == (2, 1, 7)
        assert record(redis_client, iid).state == st.STOPPED
        push(redis_client, node_id, b"not a command")
        await agent._iteration()
        assert agent.malformed == 1


async def test_after_redis_lost_its_data_the_new_epoch_series_is_accepted(redis_url, redis_client, docker_client,
                                                                          node_id):
    """Redis restarted empty: leader:epoch starts again at 1 while the worker remembers 6.
    The new generation key tells it; a lower epoch within one series is still refused."""
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        iid = place(redis_client, node_id, epoch=6)
        redis_client.set(keys.LEADER_EPOCH, 6)
        push(redis_client, node_id, st.command("remove", iid, 6))
        await agent._iteration()
        assert (agent.refused, agent.executed, agent.max_epoch) == (0, 1, 6)
        redis_client.flushdb()                                            # data lost
        redis_client.set(keys.LEADER_EPOCH, 1)                            # a new leader, epoch 1
        fresh = place(redis_client, node_id, epoch=1)
        push(redis_client, node_id, st.command("remove", fresh, 1))
        await agent._iteration()
        assert (agent.refused, agent.executed, agent.max_epoch) == (0, 2, 1)
        assert record(redis_client, fresh).state == st.STOPPED
        redis_client.set(keys.LEADER_EPOCH, 3)                            # same series: 2 < 3
        push(redis_client, node_id, st.command("stop", fresh, 2))
        await agent._iteration()
        assert (agent.refused, agent.executed) == (1, 2)


async def test_health_unhealthy_after_three_failures_ready_after_two_then_failed_when_killed(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    async with agent_for(redis_url, docker_client, node_id, health_timeout=0.3) as agent:
        await agent.register()
        iid = place(redis_client, node_id)
        push(redis_client, node_id, start_cmd(iid, kinds_spec, kinds_image))
        await until(agent, lambda: record(redis_client, iid).state == st.READY, "ready")
        container = node_containers(docker_client, node_id)[0]

        container.pause()           # /healthz stops answering; the container is not exited
        await until(agent, lambda: record(redis_client, iid).state == st.UNHEALTHY, "unhealthy")
        inst = record(redis_client, iid)
        assert "healthz" in inst.reason
        container.unpause()
        await until(agent, lambda: record(redis_client, iid).state == st.READY, "ready again")
        assert record(redis_client, iid).reason == ""

        container.kill()
        inst = await until(agent, lambda: (r := record(redis_client, iid)).state == st.FAILED and r, "failed")
        assert "exited with code 137" in inst.reason, inst.reason


async def test_start_of_a_missing_image_fails_with_reason(redis_url, redis_client, docker_client, node_id, kinds_spec):
    async with agent_for(redis_url, docker_client, node_id) as agent:
        iid = place(redis_client, node_id)
        push(redis_client, node_id, start_cmd(iid, kinds_spec, "gantry/no-such-image:0"))
        await agent._iteration()
        inst = record(redis_client, iid)
        assert inst.state == st.FAILED and "start failed" in inst.reason


async def test_orphans_of_this_node_are_removed_and_other_nodes_left_alone(
        redis_url, redis_client, docker_client, node_id, kinds_image):
    other = f"{node_id}-other"

    def create(node: str, instance: str):
        return docker_client.containers.create(
            kinds_image, labels={LABEL_MANAGED: "1", "gantry.node": node, "gantry.instance": instance,
                                 TEST_LABEL: node_id})

    owned_id = place(redis_client, node_id)
    owned = create(node_id, owned_id)
    orphan = create(node_id, "ghost")
    elsewhere_id = place(redis_client, other)
    misplaced = create(node_id, elsewhere_id)       # a record exists, but for another node
    foreign = create(other, "ghost")                 # another node's: never ours to remove
    async with agent_for(redis_url, docker_client, node_id) as agent:
        assert await agent.sweep_orphans() == 2
        left = {c.id for c in docker_client.containers.list(all=True, filters={"label": [f"{TEST_LABEL}={node_id}"]})}
        assert left == {owned.id, foreign.id}
        assert orphan.id not in left and misplaced.id not in left
        owned.remove(force=True)                     # shutdown would remove it; keep it simple
    assert foreign.id in {c.id for c in docker_client.containers.list(all=True, filters={"label": [f"gantry.node={other}"]})}


@pytest.mark.timeout(80, func_only=True)
async def test_run_loop_executes_commands_promptly_and_shutdown_removes_everything(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    async with agent_for(redis_url, docker_client, node_id, command_block=0.2) as agent:
        stop = asyncio.Event()
        runner = asyncio.create_task(agent.run(stop))
        t0 = time.monotonic()
        while not redis_client.exists(keys.node_alive(node_id)) and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)                     # the loop is now blocked in BRPOP
        probe = place(redis_client, node_id)
        push(redis_client, node_id, st.command("remove", probe, 1))
        sent = time.monotonic()
        while agent.executed < 1 and time.monotonic() - sent < 5:
            await asyncio.sleep(0.005)
        latency = time.monotonic() - sent
        print(f"command latency {latency * 1000:.1f} ms")
        assert agent.executed == 1 and latency < 0.5, latency

        ids = [place(redis_client, node_id) for _ in range(2)]
        push(redis_client, node_id, *(start_cmd(i, kinds_spec, kinds_image) for i in ids))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(record(redis_client, i).state != st.READY for i in ids):
            assert not runner.done()
            await asyncio.sleep(0.05)
        assert [record(redis_client, i).state for i in ids] == [st.READY, st.READY]
        stop.set()
        await asyncio.wait_for(runner, 10)
        await agent.shutdown(remove_containers=True)
        assert node_containers(docker_client, node_id) == []
        assert [record(redis_client, i).state for i in ids] == [st.STOPPED, st.STOPPED]
        assert not redis_client.exists(keys.node_alive(node_id))

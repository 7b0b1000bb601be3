"""Containers made ahead of need (worker/spares.py) against the real Docker engine and Redis:
claimed by a cold start (Docker's start alone), never counted as instances, and removed on
delete, redeploy, worker stop and at the orphan sweep."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import pytest
import redis.asyncio as aioredis

from gantry import keys
from gantry import state as st
from gantry.store import Store
from gantry.worker import spares
from gantry.worker.containers import LABEL_SANDBOX, LABEL_SPARE
from gantry.worker.containerspec import LABEL_MANAGED

from worker_helpers import agent_for, post, push, record, start_cmd, until

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(90, func_only=True)]


def _spec(kinds_spec, max_instances: int = 1):
    name = f"sp{uuid.uuid4().hex[:8]}"
    return dataclasses.replace(kinds_spec, name=name,
                               scaling=dataclasses.replace(kinds_spec.scaling, max_instances=max_instances))


def _containers(docker_client, node: str, function: str | None = None) -> list[dict]:
    labels = [f"gantry.node={node}"] + ([f"gantry.function={function}"] if function else [])
    return docker_client.api.containers(all=True, filters={"label": labels})


def _place(redis_client, node: str, function: str, version: int, instance_id: str | None = None,
           epoch: int = 1) -> str:
    """A pending instance record as the scheduler writes it (create_instance's fields and sets)."""
    instance_id = instance_id or spares.new_id(function)
    inst = st.Instance(id=instance_id, function=function, version=version, node=node, cpu=500,
                       memory=128 * 2**20, created=time.time(), epoch=epoch)
    redis_client.hset(keys.instance(instance_id), mapping=inst.to_hash())
    redis_client.sadd(keys.function_instances(function), instance_id)
    redis_client.sadd(keys.node_instances(node), instance_id)
    return instance_id


async def _deploy(redis_url: str, spec, image: str) -> int:
    r = aioredis.Redis.from_url(redis_url)
    try:
        version, _ = await Store(r).deploy_version(spec, image)
        return version
    finally:
        await r.aclose()


async def _spare_made(agent, function: str):
    """Drive the agent (and its background spare tasks) until it holds a made spare."""
    async def made():
        await agent.wait_spares()
        spare = agent.spares.get(function)
        return spare if spare is not None and spare.container else None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await agent._iteration()
        spare = await made()
        if spare is not None:
            return spare
        await asyncio.sleep(0.05)
    raise AssertionError(f"no spare of {function} within 30 s")


async def _run_one(agent, redis_client, node: str, spec, image: str, version: int,
                   instance_id: str | None = None) -> st.Instance:
    iid = _place(redis_client, node, spec.qualified, version, instance_id)
    push(redis_client, node, start_cmd(iid, spec, image, version=version))
    return await until(agent, lambda: (r := record(redis_client, iid)) and r.state == st.READY and r,
                       f"{iid} ready")


async def _stop(agent, redis_client, node: str, instance_id: str) -> None:
    push(redis_client, node, st.command("stop", instance_id, 1))
    await until(agent, lambda: record(redis_client, instance_id).state == st.STOPPED, f"{instance_id} stopped")
    # the reaper's part: the stopped record leaves the function's and node's sets
    redis_client.srem(keys.function_instances(record(redis_client, instance_id).function), instance_id)
    redis_client.srem(keys.node_instances(node), instance_id)
    redis_client.delete(keys.instance(instance_id))


async def test_a_spare_is_made_after_a_stop_claimed_by_the_next_start_and_never_an_instance(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    spec = _spec(kinds_spec, max_instances=1)
    fn = spec.qualified
    version = await _deploy(redis_url, spec, kinds_image)
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        first = await _run_one(agent, redis_client, node_id, spec, kinds_image, version)
        await agent.wait_spares()
        assert fn not in agent.spares          # at its maximum (1 instance): no spare
        await _stop(agent, redis_client, node_id, first.id)

        spare = await _spare_made(agent, fn)
        # offered in Redis, labelled, created only (its sandbox runs), holding no reservation
        assert redis_client.hget(keys.node_spares(node_id), fn).decode() == f"{version}:{spare.instance}"
        found = {c["Id"]: c for c in _containers(docker_client, node_id, fn)}
        assert set(found) == {spare.container, spare.sandbox}
        assert found[spare.container]["State"] == "created"
        assert found[spare.container]["Labels"][LABEL_SPARE] == "1"
        assert found[spare.sandbox]["State"] == "running"
        assert all(c["Labels"][LABEL_MANAGED] == "1" for c in found.values())
        assert found[spare.container]["Labels"]["gantry.instance"] == spare.instance
        # the sandbox names the instance it serves under its own label: a look-up of the
        # instance's container by gantry.instance finds that container alone
        assert found[spare.sandbox]["Labels"][LABEL_SANDBOX] == spare.instance
        assert "gantry.instance" not in found[spare.sandbox]["Labels"]
        assert not redis_client.exists(keys.instance(spare.instance))
        assert not redis_client.sismember(keys.node_instances(node_id), spare.instance)
        assert spare.instance not in await Store(agent.redis).instance_ids(node=node_id)
        # the sandbox is hardened like an instance and publishes the runtime port on loopback
        sandbox = docker_client.api.inspect_container(spare.sandbox)
        hc = sandbox["HostConfig"]
        assert hc["ReadonlyRootfs"] and hc["CapDrop"] == ["ALL"] and sandbox["Config"]["User"] == "10001:10001"
        assert any(o.startswith("no-new-privileges") for o in hc["SecurityOpt"])
        assert hc["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
        assert docker_client.api.inspect_container(spare.container)["HostConfig"]["NetworkMode"] == \
            f"container:{spare.sandbox}"
        # an orphan sweep leaves a held spare alone
        assert await agent.sweep_orphans() == 0
        assert {c["Id"] for c in _containers(docker_client, node_id, fn)} == {spare.container, spare.sandbox}

        # the scheduler takes it (fenced), once, for that version only
        store = Store(agent.redis)
        assert await store.take_spare(1, node_id, fn, version + 1) is None
        assert await store.take_spare(1, node_id, fn, version) == spare.instance
        assert await store.take_spare(1, node_id, fn, version) is None
        since = time.time()
        inst = await _run_one(agent, redis_client, node_id, spec, kinds_image, version, spare.instance)
        # the start was Docker's start of the container made ahead: no create since
        creates = [e for e in docker_client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                                   filters={"label": f"gantry.node={node_id}", "event": "create"})
                   if e.get("Actor", {}).get("Attributes", {}).get("gantry.instance") == spare.instance
                   and e["timeNano"] >= since * 1e9]
        assert creates == []
        assert docker_client.api.inspect_container(spare.container)["State"]["Status"] == "running"
        assert inst.port == spare.port and inst.key == spare.key
        status, data = await asyncio.to_thread(post, inst, {"via": "spare"}, 10)
        assert status == 200 and data["event"] == {"via": "spare"}
        await agent.wait_spares()
        assert fn not in agent.spares          # at its maximum again

        # stopping it removes its container and its sandbox (a namespace serves one instance)
        await _stop(agent, redis_client, node_id, inst.id)
        gone = {c["Id"] for c in _containers(docker_client, node_id, fn)}
        assert spare.container not in gone and spare.sandbox not in gone


async def test_spares_go_when_the_function_is_deleted_and_when_it_is_redeployed(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    spec = _spec(kinds_spec, max_instances=3)
    fn = spec.qualified
    v1 = await _deploy(redis_url, spec, kinds_image)
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        first = await _run_one(agent, redis_client, node_id, spec, kinds_image, v1)
        old = await _spare_made(agent, fn)     # 1 of 3 instances: a spare while it runs
        assert len(_containers(docker_client, node_id, fn)) == 3     # the instance, the spare and its sandbox

        # a redeploy: the next start is of v2; the v1 spare is withdrawn and removed, a v2 one made
        v2 = await _deploy(redis_url, spec, kinds_image)
        second = await _run_one(agent, redis_client, node_id, spec, kinds_image, v2)
        new = await _spare_made(agent, fn)
        assert new.version == v2 and new.instance != old.instance
        left = {c["Labels"].get("gantry.instance") or c["Labels"][LABEL_SANDBOX]
                for c in _containers(docker_client, node_id, fn)}
        assert left == {first.id, second.id, new.instance}
        assert redis_client.hget(keys.node_spares(node_id), fn).decode() == f"{v2}:{new.instance}"

        # deleted: the instances are drained and stopped, and the spare goes with them
        r = aioredis.Redis.from_url(redis_url)
        try:
            assert await Store(r).delete_function(fn)
        finally:
            await r.aclose()
        await _stop(agent, redis_client, node_id, first.id)
        await _stop(agent, redis_client, node_id, second.id)
        await agent.wait_spares()
        await agent.sweep_orphans()
        await agent.wait_spares()              # the sweep tends spares in the background
        assert _containers(docker_client, node_id, fn) == []
        assert not redis_client.hexists(keys.node_spares(node_id), fn)


async def test_a_deleted_function_at_zero_loses_its_spare_at_the_sweep(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    spec = _spec(kinds_spec, max_instances=1)
    fn = spec.qualified
    version = await _deploy(redis_url, spec, kinds_image)
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        first = await _run_one(agent, redis_client, node_id, spec, kinds_image, version)
        await _stop(agent, redis_client, node_id, first.id)
        await _spare_made(agent, fn)
        r = aioredis.Redis.from_url(redis_url)
        try:
            assert await Store(r).delete_function(fn)
        finally:
            await r.aclose()
        await agent.sweep_orphans()            # no command comes for a function at zero
        await agent.wait_spares()              # (the sweep tends spares in the background)
        assert _containers(docker_client, node_id, fn) == []
        assert not redis_client.hexists(keys.node_spares(node_id), fn)


async def test_the_worker_stopping_removes_its_spares_and_a_new_agent_sweeps_what_it_does_not_hold(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    spec = _spec(kinds_spec, max_instances=1)
    fn = spec.qualified
    version = await _deploy(redis_url, spec, kinds_image)
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        first = await _run_one(agent, redis_client, node_id, spec, kinds_image, version)
        await _stop(agent, redis_client, node_id, first.id)
        spare = await _spare_made(agent, fn)
    assert _containers(docker_client, node_id, fn) == []
    assert not redis_client.hexists(keys.node_spares(node_id), fn)

    # a spare left by an agent that died (made here by hand), found by the next one
    spare = spares.Spare(fn, spares.new_id(fn), version, kinds_image, "shared")
    await asyncio.to_thread(spares.make, docker_client, node_id, "127.0.0.1", spec, spare, 2.0)
    redis_client.hset(keys.node_spares(node_id), fn, spare.entry)
    assert len(_containers(docker_client, node_id, fn)) == 2
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        assert not redis_client.hexists(keys.node_spares(node_id), fn)   # not offered any more
        assert await agent.sweep_orphans() == 2
        assert _containers(docker_client, node_id, fn) == []


async def test_spares_off_and_functions_that_cannot_have_one(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    spec = _spec(kinds_spec, max_instances=2)
    version = await _deploy(redis_url, spec, kinds_image)
    async with agent_for(redis_url, docker_client, node_id, precreate=False) as agent:
        await agent.register()
        await _run_one(agent, redis_client, node_id, spec, kinds_image, version)
        await agent.wait_spares()
        assert agent.spares == {} and len(_containers(docker_client, node_id, spec.qualified)) == 1
    assert spares.eligible(spec)
    assert not spares.eligible(dataclasses.replace(spec, secrets={"TOKEN": "token"}))
    assert not spares.eligible(spec, gpu_lease="GPU-1=1")
    assert not spares.eligible(dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, gpu=1)))


def test_wanted_only_for_a_deployed_version_below_its_maximum():
    assert spares.wanted((1, 1), 1, 0, 1)
    assert not spares.wanted((1, 1), 1, 1, 1)      # at its maximum
    assert spares.wanted((1, 2), 2, 1, 3)          # the version rolling out
    assert not spares.wanted((2, 2), 1, 0, 3)      # an old version
    assert not spares.wanted(None, 1, 0, 3)        # deleted


async def test_the_maintenance_pass_never_waits_for_a_spare(
        redis_url, redis_client, docker_client, node_id, kinds_image, kinds_spec):
    """Making a spare takes Docker a second or more on a busy node: the sweep (in the pass that
    also heartbeats) only starts it, so a node never misses its heartbeat for a spare."""
    spec = _spec(kinds_spec, max_instances=1)
    fn = spec.qualified
    version = await _deploy(redis_url, spec, kinds_image)
    async with agent_for(redis_url, docker_client, node_id) as agent:
        await agent.register()
        first = await _run_one(agent, redis_client, node_id, spec, kinds_image, version)
        await agent.wait_spares()
        await _stop(agent, redis_client, node_id, first.id)
        await _spare_made(agent, fn)               # the stop's own pass made one: withdraw it,
        await agent._drop_spare(agent.spares[fn])  # so the sweep's pass is the one that makes it
        assert fn not in agent.spares and _containers(docker_client, node_id, fn) == []
        await agent.sweep_orphans()
        # the sweep is over, the spare it asked for is still being made (Docker takes longer)
        assert fn not in agent.spares or not agent.spares[fn].container
        assert any(not task.done() for task in agent._spare_tasks)
        spare = await _spare_made(agent, fn)
        assert spare.container and spare.sandbox

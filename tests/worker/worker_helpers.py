"""Helpers of the worker-agent tests: instance records written the way the scheduler writes
them, commands, an async driver that runs the agent one iteration at a time, and a direct
invocation."""
from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from gantry_runtime import wire

from gantry import keys
from gantry import state as st
from gantry.worker.agent import WorkerAgent
from gantry.worker.settings import WorkerSettings

KINDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "containers", "functions", "kinds")
TEST_LABEL = "gantry.test"
FAST = dict(heartbeat_interval=0.2, heartbeat_ttl=1.0, health_interval=0.15, health_timeout=0.4,
            drain_grace=2.0, orphan_interval=3600.0, start_timeout=30.0, command_block=0.05)


@asynccontextmanager
async def agent_for(redis_url: str, docker_client, node: str, **overrides):
    r = aioredis.Redis.from_url(redis_url)
    agent = WorkerAgent(WorkerSettings(node_id=node, **{**FAST, **overrides}), r, docker_client)
    try:
        yield agent
    finally:
        try:
            await agent.shutdown(remove_containers=True)
        finally:
            await r.aclose()


def place(redis_client, node: str, function: str = "kinds", version: int = 1, epoch: int = 1,
          cpu: int = 500, memory: int = 128 * 2**20) -> str:
    """Write a pending instance record on NODE as the scheduler does; its id."""
    instance_id = uuid.uuid4().hex[:12]
    inst = st.Instance(id=instance_id, function=function, version=version, node=node, cpu=cpu, memory=memory,
                       created=time.time(), epoch=epoch)
    redis_client.hset(keys.instance(instance_id), mapping=inst.to_hash())
    # the function exists while its instances are placed (and its log lines are kept: keys.APPEND_LOGS)
    redis_client.hsetnx(keys.function(function), "latest", version)
    redis_client.sadd(keys.function_instances(function), instance_id)
    redis_client.sadd(keys.node_instances(node), instance_id)
    return instance_id


def start_cmd(instance_id: str, spec, image: str, epoch: int = 1, version: int = 1) -> bytes:
    return st.command("start", instance_id, epoch, function=spec.name, version=version, image=image,
                      spec=spec.to_dict())


def push(redis_client, node: str, *commands: bytes) -> None:
    for cmd in commands:
        redis_client.lpush(keys.node_commands(node), cmd)


def record(redis_client, instance_id: str) -> st.Instance | None:
    return st.Instance.from_hash(redis_client.hgetall(keys.instance(instance_id)))


async def until(agent: WorkerAgent, check, what: str, timeout: float = 20.0, step: float = 0.05):
    """Drive AGENT one iteration at a time until CHECK() is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        await agent._iteration()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(step)


def post(inst: st.Instance, event, timeout: float = 20) -> tuple[int, dict]:
    """(status, JSON body) of one invocation sent straight to an instance, with its key
    (from its record), as the gateway sends it."""
    req = urllib.request.Request(f"{inst.url}/invoke", data=json.dumps(event).encode(),
                                 headers={"Content-Type": "application/json", wire.INSTANCE_KEY: inst.key})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def node_containers(docker_client, node: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": [f"gantry.node={node}"]})

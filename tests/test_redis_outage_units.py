"""While Redis is unreachable nothing is dropped and nothing waits for nothing: the worker
keeps the commands it popped and the log lines it could not ship, and the gateway answers
503 ``unavailable`` at once for a function it cannot serve from its cached view.  "Down" is
a client on a loopback port where no server listens (connections are refused at once)."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gantry import keys, state
from gantry.gateway.cache import FunctionCache
from gantry.gateway.errors import ApiError
from gantry.manifest import FunctionSpec
from gantry.store import Store
from gantry.up import free_port
from gantry.worker.agent import WorkerAgent
from gantry.worker.logship import LogShipper
from gantry.worker.settings import WorkerSettings


@pytest.fixture
async def down():
    """A Store whose Redis is down."""
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    yield Store(client)
    await client.aclose()


class FlakyStore:
    """append_logs fails ``failures`` times, then records what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures, self.lines = failures, []

    async def append_logs(self, items, maxlen):
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Redis is restarting")
        self.lines += [line for _, _, line in items]


async def test_log_lines_wait_out_a_redis_outage():
    shipper = LogShipper(maxlen=100)
    store = FlakyStore(failures=2)
    for i in range(3):
        shipper.put("fn", "i1", f"line {i}")
    for _ in range(2):
        with pytest.raises(RedisConnectionError):
            await shipper.flush(store, limit=2)
        shipper.put("fn", "i1", f"line {3 + _}")     # lines keep coming meanwhile
    while await shipper.flush(store, limit=2):
        pass
    assert store.lines == [f"line {i}" for i in range(5)]
    assert shipper.shipped == 5 and shipper.dropped == 0


async def test_commands_popped_just_before_redis_went_down_are_not_dropped(aredis):
    node = "outage-node"
    agent = WorkerAgent(WorkerSettings(node_id=node, cpu_millis=1000, memory=2**30, command_block=0.05),
                        aredis, docker_client=None)
    await aredis.lpush(keys.node_commands(node), b"not a command")   # counted as malformed once dispatched
    fence_floor = agent.store.fence_floor
    calls = 0

    async def fails_once():
        nonlocal calls
        calls += 1
        if calls == 1:            # popped, then Redis went away before the fence check
            raise RedisConnectionError("Connection closed by server.")
        return await fence_floor()

    agent.store.fence_floor = fails_once
    stop = asyncio.Event()
    loop = asyncio.create_task(agent._command_loop(stop))
    try:
        deadline = time.monotonic() + 5
        while agent.malformed == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
        agent._pool.shutdown(wait=False)
    assert calls >= 2 and agent.malformed == 1


def _spec(name: str) -> FunctionSpec:
    return FunctionSpec.from_dict({"name": name, "handler": "main:echo", "scaling": {"concurrency": 2}})


async def test_the_gateway_answers_at_once_what_it_cannot_serve_while_redis_is_down(aredis, down):
    up = Store(aredis)
    for name in ("cold", "warm"):
        await up.deploy_version(_spec(name), "img:1")
    inst = state.Instance(id="w1", function="warm", version=1, node="n1", state=state.READY,
                          host="127.0.0.1", port=9, created=time.time())
    await aredis.hset(keys.instance(inst.id), mapping=inst.to_hash())
    await aredis.sadd(keys.function_instances("warm"), inst.id)
    cache = FunctionCache(up, negative_ttl=0.0)
    assert (await cache.get("cold")).known.exists and (await cache.get("warm")).routing.balancer.ready == 1
    assert await cache.get("gone") is None

    cache.store = down                     # Redis goes away
    await cache.refresh_all()              # the periodic refresh fails: the old view is kept
    started = time.monotonic()
    for name in ("cold", "gone", "never-seen"):
        with pytest.raises(ApiError) as err:
            await cache.get(name)
        assert (err.value.status, err.value.code) == (503, "unavailable"), name
    assert time.monotonic() - started < 0.5
    assert (await cache.get("warm")).routing.balancer.ready == 1     # still served from the cached view

    cache.store = up                       # Redis is back: the next request sees it at once
    assert (await cache.get("cold")).known.exists
    await cache.close()


async def _redis_server(port: int, workdir) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(100):
        try:
            probe = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
            await probe.ping()
            await probe.aclose()
            return proc
        except RedisConnectionError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("redis-server did not start")


async def test_the_platforms_clients_ride_over_a_redis_restart(tmp_path):
    """A restart closes every pooled connection: the first command on one failed with a
    plain from_url client (a 503, a dropped worker command); the platform's client retries."""
    from gantry.settings import redis_client

    port = free_port()
    server = await _redis_server(port, tmp_path)
    plain = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    ours = redis_client(f"redis://127.0.0.1:{port}/0")
    try:
        assert await plain.ping() and await ours.ping()        # both hold a pooled connection now
        server.terminate()
        await server.wait()
        server = await _redis_server(port, tmp_path)           # back on the same port, empty
        with pytest.raises(RedisConnectionError):
            await plain.ping()                                  # the stale connection's first command
        assert await ours.ping()
    finally:
        await plain.aclose()
        await ours.aclose()
        server.kill()
        await server.wait()


async def test_a_command_waits_for_redis_instead_of_being_dropped(monkeypatch):
    from gantry.worker import agent as agent_module
    from gantry.worker import commands

    calls = []

    async def execute(agent, cmd):
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RedisConnectionError("Redis is restarting")

    monkeypatch.setattr(commands, "execute", execute)
    await agent_module.WorkerAgent._execute_riding_out_redis(None, {"op": "start", "instance": "i1"})
    assert len(calls) == 3 and calls[-1] - calls[0] >= 0.9    # retried, twice half a second apart

"""Delivery of sync invocations: at most once per forward, and a forward again only when the
instance cannot have started the request.

Against real function containers on the local Docker engine (the platform's hardened
settings), registered in Redis as the scheduler and worker would, and through a gateway on a
loopback test server.  Every handler of tests/gateway/functions/delivery writes one
``SIDE-EFFECT <tag>`` line to stdout before anything else; Docker keeps a container's log
after the container died, so the count survives the instance.  A few cases use in-process
fake upstreams instead, where the exact moment of a broken connection matters.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gantry_runtime import wire

from gantry import keys
from gantry.gateway import upstream
from gantry.gateway.appkeys import CACHE, UPSTREAM
from gantry.up import free_port

from .fleet import Fleet, build_image
from .support import AUTH, INSTANCE_KEY, add_instance, gateway, register_function

pytestmark = pytest.mark.timeout(180)

OUTCOME_UNKNOWN = "function_outcome_unknown"


@pytest.fixture(scope="module")
def delivery_image(docker_client) -> str:
    return build_image(docker_client)


@pytest.fixture
def fleet(docker_client, delivery_image):
    f = Fleet(docker_client, delivery_image)
    yield f
    f.remove_all()


def _register(redis_client, fleet: Fleet, name: str, ids: list[str]) -> None:
    register_function(redis_client, name, scaling={"concurrency": 1}, limits={"timeout": "20s"})
    for inst_id in ids:
        add_instance(redis_client, name, fleet.ports[inst_id], inst_id=inst_id)


async def _forget(redis_client, client, name: str, inst_ids: list[str]) -> None:
    """What the worker and scheduler would do for a dead instance: the record goes, and the
    gateway's view is refreshed at once (not left to the periodic refresh)."""
    for inst_id in inst_ids:
        redis_client.srem(keys.function_instances(name), inst_id)
        redis_client.delete(keys.instance(inst_id))
    cache = client.server.app[CACHE]
    await cache.refresh(await cache.get(name))


async def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _post(client, name: str, event: dict) -> tuple[int, str | None, str]:
    resp = await client.post(f"/v1/invoke/{name}", json=event, headers=AUTH)
    if resp.status == 200:
        return 200, None, ""
    err = (await resp.json())["error"]
    return resp.status, err["code"], err["message"]


# -- an instance that dies after the side effect ------------------------------------------------

@pytest.mark.asyncio
async def test_a_handler_that_exits_after_its_side_effect_runs_once_per_request(
        redis_url, redis_client, fleet):
    """5 POSTs to a handler that does its side effect and exits: 5 side effects, 5 times 502
    outcome-unknown, and the spare instances are untouched (no retry ran the request again)."""
    ids = await asyncio.to_thread(fleet.start, "main:effect_then_exit", 7, "exit")
    _register(redis_client, fleet, "exiter", ids)
    answers = []
    async with gateway(redis_url, cold_start_timeout=2.0) as client:
        for k in range(5):
            answers.append(await _post(client, "exiter", {"tag": f"exit-{k}"}))
            # the instances that ran it die; wait for that, then take them out as the worker would
            ran = [i for i, n in fleet.side_effects(f"exit-{k}").items() if n]
            await _wait_for(lambda: not any(fleet.running(i) for i in ran), 20, f"{ran} to exit")
            await _forget(redis_client, client, "exiter", ran)
    counts = fleet.side_effects("exit-")
    per_tag = {f"exit-{k}": sum(fleet.side_effects(f"exit-{k}").values()) for k in range(5)}
    assert [(status, code) for status, code, _ in answers] == [(502, OUTCOME_UNKNOWN)] * 5, (answers, per_tag)
    assert all("may have run" in message for _, _, message in answers), answers
    assert per_tag == {f"exit-{k}": 1 for k in range(5)}, per_tag
    assert sum(counts.values()) == 5
    assert sum(fleet.running(i) for i in ids) == 2     # two spares never saw a request


@pytest.mark.asyncio
async def test_a_container_killed_mid_request_is_502_and_not_run_again(redis_url, redis_client, fleet):
    ids = await asyncio.to_thread(fleet.start, "main:effect", 2, "kill")
    _register(redis_client, fleet, "killed", ids)
    async with gateway(redis_url) as client:
        call = asyncio.create_task(_post(client, "killed", {"tag": "kill-1", "seconds": 3}))
        started: list[str] = []

        def one_started() -> bool:
            started[:] = [i for i, n in fleet.side_effects("kill-1").items() if n]
            return bool(started)

        await _wait_for(one_started, 20, "the handler to start")
        await asyncio.to_thread(fleet.containers[started[0]].kill)     # SIGKILL mid-request
        status, code, message = await asyncio.wait_for(call, 30)
    assert (status, code) == (502, OUTCOME_UNKNOWN), (status, code, message, fleet.side_effects("kill-"))
    assert sum(fleet.side_effects("kill-").values()) == 1
    other = next(i for i in ids if i != started[0])
    assert fleet.running(other) and fleet.side_effects()[other] == 0


@pytest.mark.asyncio
async def test_a_request_that_exhausts_memory_kills_one_instance_not_three(redis_url, redis_client, fleet):
    ids = await asyncio.to_thread(fleet.start, "main:effect_then_hog", 3, "oom")
    _register(redis_client, fleet, "hog", ids)
    async with gateway(redis_url, cold_start_timeout=2.0) as client:
        status, code, message = await _post(client, "hog", {"tag": "oom-1"})
    assert (status, code) == (502, OUTCOME_UNKNOWN), (status, code, message, fleet.side_effects("oom-"),
                                                      [fleet.running(i) for i in ids])
    assert sum(fleet.side_effects("oom-").values()) == 1
    # the engine may mark the OOM-killed container exited a moment after the connection broke
    await _wait_for(lambda: any(not fleet.running(i) for i in ids), 10, "the OOM-killed container to exit")
    await asyncio.sleep(1.0)                       # and give a wrongful second kill time to show
    dead = [i for i in ids if not fleet.running(i)]
    assert len(dead) == 1
    assert fleet.containers[dead[0]].attrs["State"]["OOMKilled"]


# -- retries that are safe still happen ---------------------------------------------------------

@pytest.mark.asyncio
async def test_draining_at_capacity_and_refused_instances_are_retried_and_the_handler_runs_once(
        redis_url, redis_client, fleet, caplog):
    import aiohttp

    caplog.set_level(logging.INFO, logger="gantry.gateway")
    busy, draining, good = await asyncio.to_thread(fleet.start, "main:effect", 3, "safe")
    async with aiohttp.ClientSession() as direct:
        # busy: its one slot held by a request sent directly (the gateway thinks it idle);
        # draining: the same, then SIGTERM, so it answers new requests 503 draining
        hold = [asyncio.create_task(direct.post(f"http://127.0.0.1:{fleet.ports[i]}/invoke",
                                                json={"tag": f"hold-{i}", "seconds": 6},
                                                headers={wire.INSTANCE_KEY: INSTANCE_KEY}))
                for i in (busy, draining)]
        await _wait_for(lambda: all(fleet.side_effects(f"hold-{i}")[i] for i in (busy, draining)),
                        20, "the holding requests to start")
        await asyncio.to_thread(fleet.containers[draining].kill, "SIGTERM")
        await asyncio.sleep(0.3)
        _register(redis_client, fleet, "safe", [busy, draining, good])
        add_instance(redis_client, "safe", free_port(), inst_id="safe-refused")   # nobody listens
        answers = []
        async with gateway(redis_url, max_tries=4) as client:   # three bad instances and a good one
            for k in range(8):
                answers.append(await _post(client, "safe", {"tag": f"call-{k}"}))
            metrics = await (await client.get("/metrics")).text()
        for task in hold:
            resp = await task
            assert resp.status == 200
    assert answers == [(200, None, "")] * 8, answers
    for k in range(8):
        ran = fleet.side_effects(f"call-{k}")
        assert sum(ran.values()) == 1 and ran[good] == 1, (k, ran)
    logged = [(r.instance, r.reason.split(":")[0]) for r in caplog.records
              if r.getMessage() == "retrying on another instance"]
    retried = set(logged)
    assert {(busy, "at_capacity"), (draining, "draining"), ("safe-refused", "ConnectionRefusedError")} <= retried, retried
    # every retry is counted (the busy one is skipped for only 50 ms: it may be tried again)
    retries = re.search(r'gantry_gateway_retries_total\{function="safe"\} (\d+)', metrics)
    assert retries and int(retries.group(1)) == len(logged) >= 3, (metrics, logged)


# -- the moment the connection breaks, exactly (fake upstreams) ---------------------------------

async def _fake_upstream(handler) -> TestServer:
    app = web.Application()
    app.router.add_post("/invoke", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.asyncio
async def test_a_connection_closed_after_the_request_was_read_is_not_retried(redis_url, redis_client):
    hits = {"closer": 0, "good": 0}

    def make(kind):
        async def handler(request):
            hits[kind] += 1
            await request.read()
            if kind == "closer":
                request.transport.close()
                await asyncio.sleep(1)
            return web.json_response({"from": kind})
        return handler

    ups = {k: await _fake_upstream(make(k)) for k in hits}
    try:
        register_function(redis_client, "closer")
        add_instance(redis_client, "closer", ups["closer"].port, inst_id="closer")
        async with gateway(redis_url) as client:
            status, code, message = await _post(client, "closer", {})
            assert (status, code) == (502, OUTCOME_UNKNOWN), message
            assert "may have run" in message
            assert hits == {"closer": 1, "good": 0}
            # with a good instance beside it, the broken one is not retried there either
            add_instance(redis_client, "closer", ups["good"].port, inst_id="good")
            cache = client.server.app[CACHE]
            await cache.refresh(await cache.get("closer"))
            statuses = []
            for _ in range(4):
                before = hits["closer"]
                status, code, _ = await _post(client, "closer", {})
                statuses.append((status, code))
                if hits["closer"] > before:
                    assert (status, code) == (502, OUTCOME_UNKNOWN)
                else:
                    assert status == 200
            assert hits["closer"] + hits["good"] == 5     # one forward per request, never two
    finally:
        for server in ups.values():
            await server.close()


@pytest.mark.asyncio
async def test_a_connection_that_closed_before_the_request_was_written_is_retried(redis_url, redis_client):
    """request_sent is false only when no byte went out; then another instance takes it."""
    hits = {"stale": 0, "good": 0}

    def make(kind):
        async def handler(request):
            hits[kind] += 1
            return web.json_response({"from": kind})
        return handler

    ups = {k: await _fake_upstream(make(k)) for k in hits}
    try:
        register_function(redis_client, "stale")
        add_instance(redis_client, "stale", ups["stale"].port, inst_id="stale")
        add_instance(redis_client, "stale", ups["good"].port, inst_id="good")

        def hook(app):
            async def wrap(app):
                pool = app[UPSTREAM]
                connect = pool._connect

                async def closing_connect(key):
                    conn = await connect(key)
                    if key[1] == ups["stale"].port:    # it closed before we wrote anything
                        conn.transport.abort()
                        await asyncio.sleep(0.01)
                    return conn
                pool._connect = closing_connect
            app.on_startup.append(wrap)

        async with gateway(redis_url, app_hook=hook) as client:
            answers = [await _post(client, "stale", {}) for _ in range(4)]
        assert answers == [(200, None, "")] * 4
        assert hits == {"stale": 0, "good": 4}
    finally:
        for server in ups.values():
            await server.close()


def test_upstream_errors_say_whether_the_request_was_sent():
    assert not upstream.ConnectFailed("x").request_sent
    assert upstream.Disconnected("x", before_response=True).request_sent
    assert not upstream.Disconnected("x", before_response=True, request_sent=False).request_sent
    assert upstream.BadResponse("x").request_sent

"""The admin API: deploy, list, get, delete, scale, logs, nodes; validation errors are 400."""
from __future__ import annotations

import asyncio
import time

import pytest

from gantry import keys, state

from .support import AUTH, add_instance, gateway, spec_dict

pytestmark = pytest.mark.timeout(60)


def _manifest_form(name: str) -> dict:
    return {"name": name, "handler": "main:handle",
            "resources": {"cpu": 0.25, "memory": "128Mi"},
            "scaling": {"min_instances": 0, "max_instances": 3, "concurrency": 2, "idle_timeout": "30s"},
            "limits": {"timeout": "5s"}, "env": {"LOG_LEVEL": "debug"}}


async def _bad(resp, status=400, code="bad_request") -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code
    return body["error"]["message"]


async def test_deploy_list_get_scale_delete(redis_url, redis_client):
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/functions", json={"spec": _manifest_form("summarize"), "image": "img:a"},
                                 headers=AUTH)
        assert resp.status == 201, await resp.text()
        assert await resp.json() == {"name": "summarize", "tenant": "default", "version": 1, "active": 1}
        raw = redis_client.hgetall(keys.function("summarize"))
        assert raw[b"latest"] == b"1" and raw[b"active"] == b"1"
        assert redis_client.sismember(keys.FUNCTIONS, "summarize")
        stored = state.unpack(redis_client.hget(keys.function_version("summarize", 1), "spec"))
        assert stored["resources"]["memory"] == 128 * 2**20 and stored["limits"]["timeout"] == 5.0

        # a second version (in the stored dict form): latest moves, active stays for the scheduler
        spec2 = spec_dict("summarize", scaling={"max_instances": 3})
        resp = await client.post("/v1/functions", json={"spec": spec2, "image": "img:b"}, headers=AUTH)
        assert resp.status == 201 and await resp.json() == {"name": "summarize", "tenant": "default", "version": 2, "active": 1}

        add_instance(redis_client, "summarize", 9, inst_id="i-ready")
        add_instance(redis_client, "summarize", 0, st=state.PENDING, inst_id="i-pending")
        redis_client.hset(keys.function("summarize"), "pending_reason", "no node has 0.25 CPU free")

        resp = await client.get("/v1/functions", headers=AUTH)
        listed = {f["name"]: f for f in (await resp.json())["functions"]}
        s = listed["summarize"]
        assert (s["latest"], s["active"], s["image"]) == (2, 1, "img:b")
        assert (s["ready"], s["total"], s["states"]) == (1, 2, {"pending": 1, "ready": 1})

        resp = await client.get("/v1/functions/summarize", headers=AUTH)
        detail = await resp.json()
        assert detail["pending_reason"] == "no node has 0.25 CPU free"
        assert detail["active_spec"]["limits"]["timeout"] == 5.0 and detail["spec"]["limits"]["timeout"] == 10.0
        insts = {i["id"]: i for i in detail["instances"]}
        assert insts["i-ready"]["state"] == "ready" and insts["i-ready"]["address"] == "127.0.0.1:9"
        assert insts["i-ready"]["version"] == 1 and insts["i-ready"]["node"] == "n1"

        resp = await client.post("/v1/functions/summarize/scale", json={"min_instances": 2}, headers=AUTH)
        assert resp.status == 200 and await resp.json() == {"name": "summarize", "min_instances": 2}
        assert redis_client.hget(keys.function("summarize"), "min_override") == b"2"
        assert "max_instances (3)" in await _bad(await client.post(
            "/v1/functions/summarize/scale", json={"min_instances": 4}, headers=AUTH))
        await _bad(await client.post("/v1/functions/summarize/scale", json={"min_instances": -1}, headers=AUTH))
        await _bad(await client.post("/v1/functions/summarize/scale", json={"min_instances": "2"}, headers=AUTH))
        await _bad(await client.post("/v1/functions/nope/scale", json={"min_instances": 1}, headers=AUTH),
                   404, "not_found")

        resp = await client.delete("/v1/functions/summarize", headers=AUTH)
        assert resp.status == 200
        assert not redis_client.exists(keys.function("summarize"), keys.function_version("summarize", 1),
                                       keys.function_version("summarize", 2))
        assert not redis_client.sismember(keys.FUNCTIONS, "summarize")
        assert redis_client.scard(keys.function_instances("summarize")) == 2   # the scheduler drains them
        await _bad(await client.get("/v1/functions/summarize", headers=AUTH), 404, "not_found")
        await _bad(await client.delete("/v1/functions/summarize", headers=AUTH), 404, "not_found")
        await _bad(await client.post("/v1/invoke/summarize", json={}, headers=AUTH), 404, "not_found")

        # redeployed after a delete: a fresh version number, active at once
        resp = await client.post("/v1/functions", json={"spec": _manifest_form("summarize"), "image": "img:c"},
                                 headers=AUTH)
        assert await resp.json() == {"name": "summarize", "tenant": "default", "version": 3, "active": 3}


async def test_deploy_validation_errors_are_400(redis_url, redis_client):
    async with gateway(redis_url) as client:
        bad_name = {**_manifest_form("x"), "name": "Bad_Name"}
        msg = await _bad(await client.post("/v1/functions", json={"spec": bad_name, "image": "i"}, headers=AUTH))
        assert msg.startswith("spec: name: expected")
        bad_mem = _manifest_form("ok")
        bad_mem["resources"]["memory"] = "lots"
        assert "resources.memory" in await _bad(await client.post(
            "/v1/functions", json={"spec": bad_mem, "image": "i"}, headers=AUTH))
        await _bad(await client.post("/v1/functions", json={"spec": _manifest_form("ok")}, headers=AUTH))
        await _bad(await client.post("/v1/functions", json={"spec": _manifest_form("ok"), "image": "i",
                                                            "extra": 1}, headers=AUTH))
        assert "spec:" in await _bad(await client.post("/v1/functions", json={"image": "i"}, headers=AUTH))
        await _bad(await client.post("/v1/functions", data=b"{not json", headers=AUTH))
        await _bad(await client.post("/v1/functions", json=[1], headers=AUTH))
        assert not redis_client.exists(keys.FUNCTIONS)


async def test_logs_cursor_and_nodes(redis_url, redis_client):
    ids = [redis_client.xadd(keys.function_logs("fn"), {"instance": "i1", "line": f"line {i}"}).decode()
           for i in range(5)]
    redis_client.hset(keys.node("n1"), mapping=state.Node(id="n1", host="127.0.0.1", cpu=2000,
                                                           memory=4 * 2**30, started=time.time()).to_hash())
    redis_client.sadd(keys.NODES, "n1", "n-dead")
    redis_client.hset(keys.node("n-dead"), mapping=state.Node(id="n-dead", host="h", cpu=1, memory=1).to_hash())
    redis_client.set(keys.node_alive("n1"), "1", ex=30)
    redis_client.hset(keys.node_alloc("n1"), mapping={"cpu": 500, "memory": 2**28})
    inst = add_instance(redis_client, "fn", 1)
    redis_client.sadd(keys.node_instances("n1"), inst)
    async with gateway(redis_url) as client:
        resp = await client.get("/v1/functions/fn/logs?limit=3", headers=AUTH)
        page = await resp.json()
        assert [e["line"] for e in page["entries"]] == ["line 0", "line 1", "line 2"]
        assert page["entries"][0]["instance"] == "i1" and page["cursor"] == ids[2]
        resp = await client.get(f"/v1/functions/fn/logs?after={page['cursor']}", headers=AUTH)
        page = await resp.json()
        assert [e["line"] for e in page["entries"]] == ["line 3", "line 4"] and page["cursor"] == ids[4]
        resp = await client.get(f"/v1/functions/fn/logs?after={ids[4]}", headers=AUTH)
        assert await resp.json() == {"name": "fn", "entries": [], "cursor": ids[4], "more": False}
        await _bad(await client.get("/v1/functions/fn/logs?after=nope", headers=AUTH))
        await _bad(await client.get("/v1/functions/fn/logs?limit=0", headers=AUTH))

        resp = await client.get("/v1/nodes", headers=AUTH)
        nodes = (await resp.json())["nodes"]
        assert [n["id"] for n in nodes] == ["n1"]
        n = nodes[0]
        assert n["capacity"] == {"cpu": 2000, "memory": 4 * 2**30}
        assert n["allocated"] == {"cpu": 500, "memory": 2**28}
        assert n["instances"] == 1 and n["states"] == {"ready": 1}


async def test_deploy_reaches_the_invoke_cache_at_once(redis_url, redis_client, runtimes):
    """Deploy and delete reach this gateway's cache without waiting for the periodic refresh."""
    rt = runtimes.get("main:echo")

    async with gateway(redis_url, cache_refresh_interval=30) as client:
        resp = await client.post("/v1/functions", json={"spec": spec_dict("live"), "image": "i"}, headers=AUTH)
        assert resp.status == 201
        add_instance(redis_client, "live", rt.port)
        redis_client.publish(keys.EVENTS, "inst:live")
        resp = await client.post("/v1/invoke/live", json={"a": 1}, headers=AUTH)
        assert resp.status == 200
        assert (await client.delete("/v1/functions/live", headers=AUTH)).status == 200
        for _ in range(50):   # the fn:live hint (or the local refresh) lands within a moment
            resp = await client.post("/v1/invoke/live", json={}, headers=AUTH)
            if resp.status == 404:
                break
            await asyncio.sleep(0.02)
        assert resp.status == 404

"""The scaling API: POST /v1/functions/NAME/warm writes the hold the scheduler reads;
GET /v1/functions/NAME/decisions answers the scheduler's recorded decisions."""
from __future__ import annotations

import json
import time

import pytest

from gantry import keys

from .support import AUTH, gateway, spec_dict

pytestmark = pytest.mark.timeout(60)


async def _bad(resp, status=400, code="bad_request") -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code
    return body["error"]["message"]


async def _deploy(client, name: str, **scaling) -> None:
    resp = await client.post("/v1/functions", json={"spec": spec_dict(name, scaling=scaling), "image": "img:a"},
                             headers=AUTH)
    assert resp.status == 201, await resp.text()


async def test_warm_sets_the_hold_and_the_function_shows_it(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await _deploy(client, "echo", max_instances=5, target_utilization=0.5, scale_down_cooldown="2m")
        before = time.time()
        resp = await client.post("/v1/functions/echo/warm", json={"instances": 3, "for": "10m"}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["name"] == "echo" and body["instances"] == 3
        assert before + 600 <= body["until"] <= time.time() + 600
        raw = redis_client.hgetall(keys.function("echo"))
        assert raw[b"warm"] == b"3" and float(raw[b"warm_until"]) == body["until"]
        detail = await (await client.get("/v1/functions/echo", headers=AUTH)).json()
        assert detail["warm"] == {"instances": 3, "until": body["until"]}
        scaling = detail["spec"]["scaling"]
        assert (scaling["target_utilization"], scaling["scale_down_cooldown"]) == (0.5, 120.0)
        # the default duration is 10 minutes; 0 ends the hold
        body = await (await client.post("/v1/functions/echo/warm", json={"instances": 1}, headers=AUTH)).json()
        assert abs(body["until"] - (time.time() + 600)) < 5
        resp = await client.post("/v1/functions/echo/warm", json={"instances": 0}, headers=AUTH)
        assert await resp.json() == {"name": "echo", "instances": 0, "until": None}
        assert (await (await client.get("/v1/functions/echo", headers=AUTH)).json())["warm"] is None


@pytest.mark.parametrize("body, expected", [
    ({"instances": 6}, "at most max_instances (5)"),
    ({"instances": -1}, "instances: expected a whole number"),
    ({"instances": "2"}, "instances: expected a whole number"),
    ({"instances": True}, "instances: expected a whole number"),
    ({}, "instances: expected a whole number"),
    ({"instances": 1, "for": "soon"}, "for: expected a duration"),
    ({"instances": 1, "for": "0s"}, "for: expected a duration above zero"),
    ({"instances": 1, "for": "90d"}, "for: expected a duration from 0 to 30 days"),
    ({"instances": 1, "during": "1m"}, "unknown field 'during'"),
])
async def test_bad_warm_is_400_naming_the_field(redis_url, body, expected):
    async with gateway(redis_url) as client:
        await _deploy(client, "echo", max_instances=5)
        assert expected in await _bad(await client.post("/v1/functions/echo/warm", json=body, headers=AUTH))


async def test_warm_and_decisions_of_an_unknown_function_are_404(redis_url):
    async with gateway(redis_url) as client:
        await _bad(await client.post("/v1/functions/nope/warm", json={"instances": 1}, headers=AUTH), 404, "not_found")
        await _bad(await client.get("/v1/functions/nope/decisions", headers=AUTH), 404, "not_found")


async def test_decisions_newest_first_with_a_limit(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await _deploy(client, "echo")
        for i in range(3):       # what keys.RECORD_DECISION appends
            redis_client.lpush(keys.function_decisions("echo"), json.dumps(
                {"time": 100.0 + i, "from": i, "to": i + 1, "reason": f"scale up {i}->{i + 1}: {i + 1} in flight / (4 x 1)"}))
        body = await (await client.get("/v1/functions/echo/decisions", headers=AUTH)).json()
        assert [d["to"] for d in body["decisions"]] == [3, 2, 1]
        assert body["decisions"][0] == {"time": 102.0, "from": 2, "to": 3, "reason": "scale up 2->3: 3 in flight / (4 x 1)"}
        body = await (await client.get("/v1/functions/echo/decisions?limit=1", headers=AUTH)).json()
        assert [d["to"] for d in body["decisions"]] == [3]
        assert "limit" in await _bad(await client.get("/v1/functions/echo/decisions?limit=0", headers=AUTH))
        assert (await client.get("/v1/functions/echo/decisions")).status == 401

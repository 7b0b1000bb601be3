"""Auth, unknown functions, body limits and the never-a-traceback rule."""
from __future__ import annotations

import pytest
from aiohttp import web

from gantry import keys
from gantry.gateway.settings import GatewaySettings, SettingsError

from .support import ADMIN_HASH, ADMIN_KEY, AUTH, free_port, gateway, register_function

pytestmark = pytest.mark.timeout(30)


async def _error(resp, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


async def test_auth_missing_or_wrong_key_is_401(redis_url, redis_client):
    async with gateway(redis_url) as client:
        for path in ("/v1/functions", "/v1/invoke/anything", "/v1/nodes"):
            method = client.post if "invoke" in path else client.get
            await _error(await method(path), 401, "unauthorized")
            await _error(await method(path, headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
            await _error(await method(path, headers={"Authorization": f"Basic {ADMIN_KEY}"}),
                         401, "unauthorized")
        resp = await client.get("/v1/functions", headers=AUTH)
        assert resp.status == 200 and isinstance((await resp.json())["functions"], list)
        resp = await client.get("/healthz")
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
        resp = await client.get("/metrics")
        assert resp.status == 200 and "gantry_gateway_requests_total" in await resp.text()


async def test_admin_key_hash_read_from_redis(redis_url, redis_client):
    redis_client.set(keys.ADMIN_KEY_HASH, ADMIN_HASH)

    async with gateway(redis_url, admin_key_hash=None) as client:
        assert (await client.get("/v1/functions", headers=AUTH)).status == 200
        await _error(await client.get("/v1/functions", headers={"Authorization": "Bearer x"}),
                     401, "unauthorized")


async def test_no_admin_key_anywhere_refuses_everyone(redis_url, redis_client):
    async with gateway(redis_url, admin_key_hash=None) as client:
        await _error(await client.get("/v1/functions", headers=AUTH), 401, "unauthorized")


async def test_unknown_function_is_404(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await _error(await client.post("/v1/invoke/nope", json={}, headers=AUTH), 404, "not_found")
        await _error(await client.post("/v1/invoke/Bad_Name!", json={}, headers=AUTH), 404, "not_found")
        await _error(await client.get("/v1/no-such-route", headers=AUTH), 404, "not_found")
        await _error(await client.get("/v1/invoke/nope", headers=AUTH), 405, "method_not_allowed")


async def test_oversize_body_is_413_with_and_without_content_length_and_bad_timeout_400(redis_url, redis_client):
    register_function(redis_client, "big")   # no instance: the limit applies before any waiting

    async def chunks():
        for _ in range(8):
            yield b"x" * 1024

    async with gateway(redis_url, max_body=4096, cold_start_timeout=0.3) as client:
        await _error(await client.post("/v1/invoke/big", data=b"x" * 5000, headers=AUTH), 413, "too_large")
        resp = await client.post("/v1/invoke/big", data=chunks(), headers=AUTH)
        assert "Content-Length" not in resp.request_info.headers
        await _error(resp, 413, "too_large")
        for bad in ("0", "-1", "soon", "inf"):
            resp = await client.post("/v1/invoke/big", json={}, headers={**AUTH, "X-Gantry-Timeout": bad})
            await _error(resp, 400, "bad_request")
        # at the limit it is accepted (and then finds no instance)
        resp = await client.post("/v1/invoke/big", data=b"x" * 4096, headers=AUTH)
        await _error(resp, 503, "no_capacity")


async def test_unexpected_exception_is_500_internal_without_traceback(redis_url, redis_client):
    async def boom(request):
        raise RuntimeError("secret detail")

    def hook(app):
        app.router.add_get("/v1/boom", boom)

    async with gateway(redis_url, app_hook=hook) as client:
        resp = await client.get("/v1/boom", headers=AUTH)
        body = await _error(resp, 500, "internal")
        text = str(body)
        assert "Traceback" not in text and "secret" not in text


async def test_redis_down_is_json_not_traceback(redis_url):
    dead = f"redis://127.0.0.1:{free_port()}/15"

    async with gateway(dead) as client:
        resp = await client.post("/v1/invoke/fn", json={}, headers=AUTH)
        assert resp.status in (500, 503)
        body = await resp.json()
        assert body["error"]["code"] in ("unavailable", "internal")
        assert "Traceback" not in await resp.text()
        resp = await client.get("/v1/functions", headers=AUTH)
        await _error(resp, 503, "unavailable")   # Redis down is not our bug: retry later
        assert (await client.get("/healthz")).status == 200


def test_settings_from_env():
    s = GatewaySettings.from_env({"GANTRY_REDIS_URL": "redis://127.0.0.1:6379/3", "GANTRY_GATEWAY_PORT": "9000",
                                  "GANTRY_MAX_BODY": "1024", "GANTRY_COLD_START_TIMEOUT": "5s"})
    assert (s.redis_url, s.port, s.max_body, s.cold_start_timeout) == ("redis://127.0.0.1:6379/3", 9000, 1024, 5.0)
    assert s.host == "127.0.0.1" and s.gateway_id and s.admin_key_hash is None
    with pytest.raises(SettingsError, match="GANTRY_GATEWAY_PORT"):
        GatewaySettings.from_env({"GANTRY_GATEWAY_PORT": "http"})
    assert GatewaySettings(redis_url="x").gateway_id != GatewaySettings(redis_url="x").gateway_id

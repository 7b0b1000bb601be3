"""The gateway sends each instance its key from the instance record, and none of the platform
headers a caller sends: the runtime trusts X-Gantry-* headers, so only the gateway sets them."""
from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gantry_runtime import wire

from .support import AUTH, INSTANCE_KEY, add_instance, gateway, register_function

pytestmark = pytest.mark.timeout(60)

FORGED = {wire.INSTANCE_KEY: "stolen", wire.TENANT: "someone-else", wire.INVOCATION_ID: "chosen-by-caller",
          wire.DURATION_MS: "1", wire.STREAM: "1", "X-Gantry-Anything": "x"}


@pytest.mark.asyncio
async def test_forwards_carry_the_records_key_and_no_platform_header_of_the_caller(redis_url, redis_client):
    seen: list = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(request.headers.copy())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/invoke", upstream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        register_function(redis_client, "keyed")
        add_instance(redis_client, "keyed", server.port)
        async with gateway(redis_url) as client:
            resp = await client.post("/v1/invoke/keyed", json={}, headers={**AUTH, **FORGED, wire.TIMEOUT: "3"})
            assert resp.status == 200, await resp.text()
            assert wire.INSTANCE_KEY not in resp.headers
    finally:
        await server.close()

    [headers] = seen
    assert headers.getall(wire.INSTANCE_KEY) == [INSTANCE_KEY]          # the record's, once
    assert headers.getall(wire.TENANT) == ["default"]                    # the caller's principal
    [inv] = headers.getall(wire.INVOCATION_ID)
    assert len(inv) == 32 and inv != FORGED[wire.INVOCATION_ID]          # the gateway's own
    assert headers[wire.TIMEOUT] == "3"                                  # parsed, may only lower
    platform = {k.lower() for k in headers if k.lower().startswith(wire.HEADER_PREFIX)}
    assert platform == {h.lower() for h in (wire.INSTANCE_KEY, wire.TENANT, wire.INVOCATION_ID, wire.TIMEOUT)}
    assert "Authorization" not in headers                                # the caller's key stays here

"""GET /v1/callbacks/secret and the gateway's callback deliverer, on a real Redis: a tenant
reads the secret its callbacks are signed with (a derived one per tenant; the admin may name
any tenant), and a gateway delivers a settled invocation's callback, signed with it."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiohttp import web

from gantry.invocations import signing
from gantry.invocations.model import State
from gantry.invocations.store import InvocationStore
from gantry.manifest import AsyncPolicy

from .support import AUTH, gateway
from .test_tenants import bearer, make_key, make_tenant

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_configured_secret(monkeypatch):
    monkeypatch.delenv("GANTRY_CALLBACK_SECRET", raising=False)
    monkeypatch.delenv("GANTRY_CALLBACK_SECRET_FILE", raising=False)


async def _secret(client, headers, query: str = "") -> dict:
    resp = await client.get("/v1/callbacks/secret" + query, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_each_tenant_reads_its_own_derived_secret(redis_url, redis_client):
    async with gateway(redis_url) as client:
        platform = await _secret(client, AUTH)
        assert platform["tenant"] == "default" and platform["algorithm"] == "HMAC-SHA256"
        assert platform["header"] == "X-Gantry-Signature" and len(bytes.fromhex(platform["secret"])) == 32

        await make_tenant(client, "acme")
        acme_admin = await make_key(client, "acme", "tenant-admin")
        acme = await _secret(client, bearer(acme_admin))
        assert acme["tenant"] == "acme"
        assert bytes.fromhex(acme["secret"]) == signing.tenant_secret(bytes.fromhex(platform["secret"]), "acme")
        assert await _secret(client, AUTH, "?tenant=acme") == acme          # the platform admin names it

        # a tenant's key cannot read another tenant's; a deploy or invoke key cannot read any
        resp = await client.get("/v1/callbacks/secret?tenant=default", headers=bearer(acme_admin))
        assert resp.status == 404
        invoker = await make_key(client, None, "invoke", headers=bearer(acme_admin))
        deployer = await make_key(client, None, "deploy", headers=bearer(acme_admin))
        for key in (invoker, deployer):
            resp = await client.get("/v1/callbacks/secret", headers=bearer(key))
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
        assert (await client.get("/v1/callbacks/secret")).status == 401

    # another gateway (a replica, or this one restarted) signs with the same secret
    async with gateway(redis_url) as again:
        assert await _secret(again, AUTH) == platform


async def test_a_configured_secret_is_used_as_it_is(redis_url, redis_client, monkeypatch):
    monkeypatch.setenv("GANTRY_CALLBACK_SECRET", "x" * 40)
    async with gateway(redis_url) as client:
        assert bytes.fromhex((await _secret(client, AUTH))["secret"]) == b"x" * 40


async def test_the_gateway_delivers_a_settled_invocations_callback(redis_url, redis_client, aredis):
    seen: list[tuple[bool, dict]] = []
    secret: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((signing.verify(secret[0], request.headers[signing.HEADER], body, time.time()),
                     await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        async with gateway(redis_url) as client:
            secret.append(bytes.fromhex((await _secret(client, AUTH))["secret"]))
            store, inv_id = InvocationStore(aredis), uuid.uuid4().hex
            await store.submit(inv_id, "fn", "default", AsyncPolicy(), b"{}", "application/json", callback_url=url)
            [entry] = await store.read("fn", "normal", "dispatcher", 10)
            claim = await store.claim(entry, "dispatcher", 3600)
            await store.settle(entry, claim.lease, State.SUCCEEDED, 3600, status=200, result=b"done",
                               result_type="text/plain; charset=utf-8")
            deadline = time.monotonic() + 20
            while (inv := await store.get(inv_id)).callback["state"] != "delivered":
                assert time.monotonic() < deadline, inv.callback
                await asyncio.sleep(0.05)
        assert inv.callback["status"] == 204 and inv.callback["attempts"] == 1
        assert len(seen) == 1 and seen[0][0] is True
        assert seen[0][1]["id"] == inv_id and seen[0][1]["result"] == "done"
    finally:
        await runner.cleanup()

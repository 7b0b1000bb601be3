"""Tenants and API keys through the gateway, on real Redis and real runtime processes:
tenant records, keys shown once and stored hashed, scopes, a tenant seeing only its own
functions (another tenant's is a 404), and revocation reaching every gateway replica."""
from __future__ import annotations

import asyncio
import time

import pytest

from gantry import keys
from gantry.gateway.auth import KEY_RECHECK
from gantry.tenants.apikeys import KEY_RE

from .support import AUTH, add_instance, gateway, spec_dict

pytestmark = pytest.mark.timeout(90)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_tenant(client, tenant_id: str, **fields) -> dict:
    resp = await client.post("/v1/tenants", json={"id": tenant_id, **fields}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def make_key(client, tenant_id: str | None, scope: str, headers=AUTH, **fields) -> str:
    body = {"scope": scope, **fields}
    if tenant_id is not None:
        body["tenant"] = tenant_id
    resp = await client.post("/v1/keys", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["key"]


async def deploy(client, key: str, name: str, handler: str = "main:echo") -> dict:
    spec = {**spec_dict(name), "handler": handler}
    resp = await client.post("/v1/functions", json={"spec": spec, "image": "img:1"}, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_tenant_records_validate_and_list(redis_url, redis_client):
    async with gateway(redis_url) as client:
        made = await make_tenant(client, "acme", name="Acme Corp", quotas={"instances": 4, "memory": "2Gi"})
        assert made["isolation"] == "container"                     # the default for new tenants
        assert made["quotas"] == {"instances": 4, "memory": 2 * 2**30} and made["functions"] == 0
        resp = await client.post("/v1/tenants", json={"id": "acme"}, headers=AUTH)
        assert resp.status == 409
        for body, field in (({"id": "Acme"}, "id"), ({"id": "b", "isolation": "vm"}, "isolation"),
                            ({"id": "b", "quotas": {"cpu": -1}}, "quotas.cpu"),
                            ({"id": "b", "quotas": {"disk": 1}}, "quotas.disk"), ({"id": "b", "x": 1}, "x")):
            resp = await client.post("/v1/tenants", json=body, headers=AUTH)
            assert resp.status == 400 and (await resp.json())["error"]["message"].startswith(field + ":"), body
        resp = await client.patch("/v1/tenants/acme", json={"isolation": "node", "quotas": {"instances": None}},
                                  headers=AUTH)
        assert resp.status == 200
        updated = await resp.json()
        assert updated["isolation"] == "node" and updated["quotas"] == {"memory": 2 * 2**30}
        listed = {t["id"]: t for t in (await (await client.get("/v1/tenants", headers=AUTH)).json())["tenants"]}
        assert set(listed) == {"default", "acme"} and listed["default"]["isolation"] == "shared"
        assert (await client.delete("/v1/tenants/default", headers=AUTH)).status == 409
        assert (await client.delete("/v1/tenants/nobody", headers=AUTH)).status == 404


async def test_keys_are_shown_once_and_stored_hashed(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await make_tenant(client, "acme")
        resp = await client.post("/v1/keys", json={"tenant": "acme", "scope": "deploy", "note": "ci"}, headers=AUTH)
        made = await resp.json()
        key = made["key"]
        assert KEY_RE.match(key) and key.startswith(made["prefix"]) and len(key[len(made["prefix"]):]) == 43  # 256 bits
        who = await (await client.get("/v1/whoami", headers=bearer(key))).json()
        assert who == {"tenant": "acme", "scope": "deploy", "key_id": made["id"], "functions": None}
        listed = (await (await client.get("/v1/keys?tenant=acme", headers=AUTH)).json())["keys"]
        assert [k["id"] for k in listed] == [made["id"]]
        assert "key" not in listed[0] and "hash" not in listed[0] and listed[0]["live"] is True
        # nothing in Redis holds the key itself: only its SHA-256
        for name in redis_client.scan_iter("*"):
            kind = redis_client.type(name)
            values = (redis_client.hvals(name) if kind == b"hash" else
                      [redis_client.get(name)] if kind == b"string" else [])
            assert all(key.encode() not in (v or b"") for v in values), name
        stored = redis_client.hget(keys.api_key(made["id"]), "hash").decode()
        import hashlib
        assert stored == hashlib.sha256(key.encode()).hexdigest()


async def test_a_tenant_sees_only_its_own_functions(redis_url, redis_client, runtimes):
    echo, text = runtimes.get("main:echo"), runtimes.get("main:async_text")
    async with gateway(redis_url) as client:
        await make_tenant(client, "acme")
        await make_tenant(client, "globex")
        acme = await make_key(client, "acme", "tenant-admin")
        globex = await make_key(client, "globex", "tenant-admin")
        # the same bare name in two tenants: two functions
        assert (await deploy(client, acme, "hello"))["name"] == "hello"
        await deploy(client, globex, "hello", handler="main:async_text")
        await deploy(client, globex, "secret-plan", handler="main:async_text")
        add_instance(redis_client, "acme.hello", echo.port)
        add_instance(redis_client, "globex.hello", text.port)
        resp = await client.post("/v1/invoke/hello", json={"name": "x"}, headers=bearer(acme))
        assert resp.status == 200 and (await resp.json())["event"] == {"name": "x"}
        resp = await client.post("/v1/invoke/hello", json={"name": "x"}, headers=bearer(globex))
        assert resp.status == 200 and await resp.text() == "hello x"
        # another tenant's function, by its bare name or its qualified one: not found, never forbidden
        for path in ("/v1/invoke/secret-plan", "/v1/invoke/globex.hello", "/v1/invoke/globex.secret-plan"):
            resp = await client.post(path, json={}, headers=bearer(acme))
            assert resp.status == 404, path
            assert "globex" not in (await resp.text()).replace(path.rsplit("/", 1)[1], ""), path
        for method, path in (("GET", "/v1/functions/secret-plan"), ("DELETE", "/v1/functions/secret-plan"),
                             ("GET", "/v1/functions/globex.hello"), ("GET", "/v1/functions/globex.hello/logs"),
                             ("GET", "/v1/tenants/globex"), ("GET", "/v1/keys?tenant=globex"),
                             ("GET", "/v1/functions?tenant=globex")):
            resp = await client.request(method, path, headers=bearer(acme))
            assert resp.status == 404, (method, path, resp.status)
        listed = (await (await client.get("/v1/functions", headers=bearer(acme))).json())["functions"]
        assert [(f["name"], f["tenant"]) for f in listed] == [("hello", "acme")]
        assert redis_client.sismember(keys.FUNCTIONS, "globex.secret-plan")       # still there
        # the platform admin sees every tenant's, qualified, and invokes any
        listed = (await (await client.get("/v1/functions", headers=AUTH)).json())["functions"]
        assert sorted(f["name"] for f in listed) == ["acme.hello", "globex.hello", "globex.secret-plan"]
        resp = await client.post("/v1/invoke/globex.hello", json={"name": "adm"}, headers=AUTH)
        assert resp.status == 200 and await resp.text() == "hello adm"
        # a tenant that still has functions cannot be removed
        assert (await client.delete("/v1/tenants/globex", headers=AUTH)).status == 409


async def test_scopes_refuse_what_they_do_not_allow(redis_url, redis_client, runtimes):
    echo = runtimes.get("main:echo")
    async with gateway(redis_url) as client:
        await make_tenant(client, "acme")
        admin = await make_key(client, "acme", "tenant-admin")
        deployer = await make_key(client, None, "deploy", headers=bearer(admin))       # made by the tenant-admin
        invoker = await make_key(client, None, "invoke", headers=bearer(admin))
        limited = await make_key(client, None, "invoke", headers=bearer(admin), functions=["one"])
        for name in ("one", "two"):
            await deploy(client, deployer, name)
            add_instance(redis_client, f"acme.{name}", echo.port)
        refused = {
            invoker: [("POST", "/v1/functions", {"spec": spec_dict("x"), "image": "i"}), ("GET", "/v1/functions", None),
                      ("DELETE", "/v1/functions/one", None), ("POST", "/v1/keys", {"scope": "invoke"}),
                      ("GET", "/v1/nodes", None)],
            deployer: [("POST", "/v1/keys", {"scope": "invoke"}), ("GET", "/v1/keys", None),
                       ("POST", "/v1/tenants", {"id": "x"})],
            admin: [("POST", "/v1/tenants", {"id": "x"}), ("PATCH", "/v1/tenants/acme", {"name": "x"}),
                    ("POST", "/v1/keys", {"scope": "admin"}), ("GET", "/v1/nodes", None),
                    ("DELETE", "/v1/tenants/acme", None)],
            limited: [("POST", "/v1/invoke/two", {})],
        }
        for key, calls in refused.items():
            for method, path, body in calls:
                resp = await client.request(method, path, json=body, headers=bearer(key))
                assert resp.status == 403, (method, path, resp.status, await resp.text())
                assert (await resp.json())["error"]["code"] == "forbidden"
        for key in (invoker, deployer, admin, limited):
            resp = await client.post("/v1/invoke/one", json={"k": 1}, headers=bearer(key))
            assert resp.status == 200, await resp.text()
        # a tenant-admin revokes its tenant's keys, not another tenant's (that one is not found)
        await make_tenant(client, "globex")
        other = (await (await client.post("/v1/keys", json={"tenant": "globex", "scope": "invoke"},
                                          headers=AUTH)).json())["id"]
        assert (await client.delete(f"/v1/keys/{other}", headers=bearer(admin))).status == 404


async def test_revocation_reaches_every_gateway_within_five_seconds(redis_url, redis_client, runtimes):
    echo = runtimes.get("main:echo")
    async with gateway(redis_url) as one, gateway(redis_url) as two:
        await make_tenant(one, "acme")
        admin = await make_key(one, "acme", "tenant-admin")
        await deploy(one, admin, "hello")
        add_instance(redis_client, "acme.hello", echo.port)
        key = await make_key(one, None, "invoke", headers=bearer(admin))
        key_id = key.split("_")[1]
        for client in (one, two):      # both replicas have the key cached
            assert (await client.post("/v1/invoke/hello", json={}, headers=bearer(key))).status == 200
        t0 = time.monotonic()
        assert (await one.delete(f"/v1/keys/{key_id}", headers=bearer(admin))).status == 200
        refused_after = {}
        while len(refused_after) < 2 and time.monotonic() - t0 < 10:
            for name, client in (("one", one), ("two", two)):
                if name not in refused_after:
                    resp = await client.post("/v1/invoke/hello", json={}, headers=bearer(key))
                    if resp.status == 401:
                        refused_after[name] = time.monotonic() - t0
            await asyncio.sleep(0.05)
        assert set(refused_after) == {"one", "two"} and max(refused_after.values()) < 5.0, refused_after
        print(f"revoked key refused after: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in refused_after.items())}")

        # without the announcement (lost pub/sub): the recheck still bounds it
        quiet = await make_key(one, None, "invoke", headers=bearer(admin))
        assert (await two.post("/v1/invoke/hello", json={}, headers=bearer(quiet))).status == 200
        redis_client.hset(keys.api_key(quiet.split("_")[1]), "revoked", str(time.time()))   # no PUBLISH
        t0 = time.monotonic()
        while (await two.post("/v1/invoke/hello", json={}, headers=bearer(quiet))).status == 200:
            assert time.monotonic() - t0 < 5.0
            await asyncio.sleep(0.05)
        assert time.monotonic() - t0 <= KEY_RECHECK + 1.0
        print(f"revocation without the announcement refused after {(time.monotonic() - t0) * 1000:.0f} ms")


async def test_an_expired_key_is_refused(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await make_tenant(client, "acme")
        key = await make_key(client, "acme", "invoke", ttl="1s")
        assert (await client.get("/v1/whoami", headers=bearer(key))).status == 200
        await asyncio.sleep(1.1)
        resp = await client.get("/v1/whoami", headers=bearer(key))
        assert resp.status == 401 and "expired" in (await resp.json())["error"]["message"]


async def test_removing_a_tenant_removes_its_keys(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await make_tenant(client, "acme")
        key = await make_key(client, "acme", "tenant-admin")
        assert (await client.get("/v1/whoami", headers=bearer(key))).status == 200
        resp = await client.delete("/v1/tenants/acme", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["keys_removed"] == 1
        assert (await client.get("/v1/whoami", headers=bearer(key))).status == 401
        assert not redis_client.exists(keys.tenant("acme")) and not redis_client.sismember(keys.TENANTS, "acme")


async def test_a_key_in_steady_use_is_rechecked_without_waiting(monkeypatch):
    """Logic of the key cache (a stand-in store that is slow to answer): past KEY_RECHECK a
    used key is served at once while one background read rechecks it, and that read's answer
    (revoked) takes effect; a key idle past KEY_REFRESH_AHEAD is read before it is served."""
    from gantry.gateway import auth as auth_mod
    from gantry.settings import hash_key
    from gantry.tenants.apikeys import ApiKey, new_key
    from gantry.tenants.model import Scope

    monkeypatch.setattr(auth_mod, "KEY_RECHECK", 0.05)
    monkeypatch.setattr(auth_mod, "KEY_REFRESH_AHEAD", 0.6)
    key_id, key = new_key()
    record = ApiKey(id=key_id, tenant="acme", scope=Scope.INVOKE, hash=hash_key(key))

    class SlowKeys:
        reads = 0
        current = record

        async def get_key(self, asked):
            SlowKeys.reads += 1
            await asyncio.sleep(0.2)
            return SlowKeys.current

    a = auth_mod.Authenticator(keys=SlowKeys())
    t0 = time.monotonic()
    assert (await a.resolve(key)).tenant == "acme" and time.monotonic() - t0 >= 0.15    # first use: read in line
    await asyncio.sleep(0.1)                                       # past KEY_RECHECK, within REFRESH_AHEAD
    SlowKeys.current = ApiKey(**{**record.__dict__, "revoked": time.time()})
    t0 = time.monotonic()
    assert (await a.resolve(key)) is not None and time.monotonic() - t0 < 0.05        # served, not waited
    assert (await a.resolve(key)) is not None
    await asyncio.sleep(0)
    assert SlowKeys.reads == 2 and len(a._rechecks) == 1                             # one recheck at a time
    await asyncio.sleep(0.3)                                        # the recheck found it revoked
    assert await a.resolve(key) is None and SlowKeys.reads == 2
    # idle past REFRESH_AHEAD: read in line again
    SlowKeys.current = record
    a2 = auth_mod.Authenticator(keys=SlowKeys())
    await a2.resolve(key)
    await asyncio.sleep(0.7)
    t0 = time.monotonic()
    assert await a2.resolve(key) is not None and time.monotonic() - t0 >= 0.15

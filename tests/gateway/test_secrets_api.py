"""The secrets API on a real Redis: values go in sealed and never come out; every call acts
in its tenant; a deploy naming a secret the tenant lacks is refused; a gateway without the
master key answers 503 naming the setting."""
from __future__ import annotations

import base64
import os

import pytest

from gantry import keys
from gantry.tenants.secretbox import MasterKey

from .support import AUTH, gateway, spec_dict

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def master_key(monkeypatch) -> MasterKey:
    raw = os.urandom(32)
    monkeypatch.setenv("GANTRY_SECRETS_KEY", base64.b64encode(raw).decode())
    monkeypatch.delenv("GANTRY_SECRETS_KEY_FILE", raising=False)
    return MasterKey(raw)


async def test_put_list_delete_and_values_never_come_back(redis_url, redis_client, master_key):
    value = "sk-" + os.urandom(12).hex()
    async with gateway(redis_url) as client:
        resp = await client.put("/v1/secrets/openai", json={"value": value}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        assert await resp.json() == {"name": "openai", "tenant": "default", "created": True}
        sealed = redis_client.hget(keys.tenant_secrets("default"), "openai")
        assert value.encode() not in sealed and master_key.open("default", "openai", sealed) == value.encode()

        resp = await client.put("/v1/secrets/openai", json={"value": value + "2"}, headers=AUTH)
        assert resp.status == 200 and (await resp.json())["created"] is False
        listed = await (await client.get("/v1/secrets", headers=AUTH)).json()
        assert [s["name"] for s in listed["secrets"]] == ["openai"] and value not in str(listed)
        entry = listed["secrets"][0]
        assert 0 < entry["created"] <= entry["updated"] and entry["functions"] == []

        # a deploy naming a missing secret is refused, naming it; one naming a present one goes through
        spec = spec_dict("fn")
        resp = await client.post("/v1/functions", json={"spec": {**spec, "secrets": {"A": "openai", "B": "nope"}},
                                                        "image": "img:1"}, headers=AUTH)
        assert resp.status == 400
        assert "tenant 'default' has no secret named 'nope'" in (await resp.json())["error"]["message"]
        resp = await client.post("/v1/functions", json={"spec": {**spec, "secrets": {"A": "openai"}},
                                                        "image": "img:1"}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        listed = await (await client.get("/v1/secrets", headers=AUTH)).json()
        assert listed["secrets"][0]["functions"] == ["fn"]

        resp = await client.delete("/v1/secrets/openai", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["deleted"] is True
        resp = await client.delete("/v1/secrets/openai", headers=AUTH)
        assert resp.status == 404
        assert not redis_client.exists(keys.tenant_secrets("default"))


async def test_each_tenant_sees_only_its_own_secrets(redis_url, redis_client, master_key):
    async with gateway(redis_url) as client:
        resp = await client.put("/v1/secrets/openai?tenant=acme", json={"value": "acme-value"}, headers=AUTH)
        assert resp.status == 201 and (await resp.json())["tenant"] == "acme"
        beta = await (await client.get("/v1/secrets?tenant=beta", headers=AUTH)).json()
        assert beta == {"tenant": "beta", "secrets": []}
        default = await (await client.get("/v1/secrets", headers=AUTH)).json()
        assert default["secrets"] == []
        assert (await client.delete("/v1/secrets/openai?tenant=beta", headers=AUTH)).status == 404
        acme = await (await client.get("/v1/secrets?tenant=acme", headers=AUTH)).json()
        assert [s["name"] for s in acme["secrets"]] == ["openai"]
        # sealed for acme: beta's name for it would not open it (AAD), even copied over
        sealed = redis_client.hget(keys.tenant_secrets("acme"), "openai")
        assert master_key.open("acme", "openai", sealed) == b"acme-value"


@pytest.mark.parametrize("body, status, expected", [
    ({"value": ""}, 400, "non-empty"),
    ({"value": 3}, 400, "expected a string"),
    ({"other": "x"}, 400, 'one field, "value"'),
    ({"value": "a\u0000b"}, 400, "NUL"),
    ({"value": "x" * (64 * 1024 + 1)}, 413, "65536 bytes"),
])
async def test_bad_values_are_refused_without_echoing_them(redis_url, redis_client, master_key, body, status, expected):
    async with gateway(redis_url) as client:
        resp = await client.put("/v1/secrets/openai", json=body, headers=AUTH)
        assert resp.status == status, await resp.text()
        message = (await resp.json())["error"]["message"]
        assert expected in message and "xxxxxxxx" not in message
        resp = await client.put("/v1/secrets/bad%20name", json={"value": "v"}, headers=AUTH)
        assert resp.status == 400 and "secret name" in (await resp.json())["error"]["message"]
    assert not redis_client.exists(keys.tenant_secrets("default"))


async def test_a_gateway_without_the_master_key_answers_503_naming_the_setting(redis_url, redis_client, monkeypatch):
    monkeypatch.delenv("GANTRY_SECRETS_KEY", raising=False)
    monkeypatch.delenv("GANTRY_SECRETS_KEY_FILE", raising=False)
    async with gateway(redis_url) as client:
        resp = await client.put("/v1/secrets/openai", json={"value": "v"}, headers=AUTH)
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["code"] == "secrets_unavailable" and "GANTRY_SECRETS_KEY_FILE" in body["error"]["message"]
        assert (await client.get("/v1/secrets", headers=AUTH)).status == 200
        assert (await client.get("/v1/secrets")).status == 401

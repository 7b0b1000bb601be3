"""Tenants end to end: the same bare name deployed by two tenants runs as two functions on
the real scheduler, worker and Docker engine, each tenant's key reaches its own, and the
containers carry the qualified name and the tenant."""
from __future__ import annotations

import pytest

from gantry.client import APIError, Client

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(240)]


def test_two_tenants_same_name_separate_functions(platform, kinds_build, docker_client):
    admin = platform.client
    keys = {}
    for tenant in ("acme", "globex"):
        admin.call("POST", "/v1/tenants", {"id": tenant})
        made = admin.call("POST", "/v1/keys", {"tenant": tenant, "scope": "tenant-admin"})
        keys[tenant] = Client(admin.url, made["key"], timeout=60)
    spec = kinds_build.spec.to_dict()
    spec.pop("tenant")
    for tenant, handler in (("acme", "main:echo"), ("globex", "main:async_text")):
        answer = keys[tenant].call("POST", "/v1/functions", {"spec": {**spec, "name": "hello", "handler": handler},
                                                             "image": kinds_build.image})
        assert (answer["name"], answer["tenant"]) == ("hello", tenant)
    acme = b"".join(keys["acme"].invoke("hello", b'{"name": "a"}', "application/json"))
    assert b'"event": {"name": "a"}' in acme or b'"event":{"name":"a"}' in acme
    assert b"".join(keys["globex"].invoke("hello", b'{"name": "g"}', "application/json")) == b"hello g"
    with pytest.raises(APIError) as err:
        b"".join(keys["acme"].invoke("globex.hello", b"{}", "application/json"))
    assert err.value.status == 404
    assert b"".join(admin.invoke("globex.hello", b'{"name": "adm"}', "application/json")) == b"hello adm"
    running = [c.labels for c in docker_client.containers.list(filters={"label": "gantry.managed=1"})
               if c.labels.get("gantry.node", "").startswith(f"e2e-{platform.run_id}")]
    # instances' containers (a sandbox holding a namespace made ahead, worker/spares.py, is none)
    labels = [x for x in running if "gantry.sandbox" not in x]
    assert sorted((x["gantry.function"], x["gantry.tenant"]) for x in labels) == [
        ("acme.hello", "acme"), ("globex.hello", "globex")]
    assert all((x["gantry.function"].split(".")[0], x["gantry.tenant"]) in (("acme", "acme"), ("globex", "globex"))
               for x in running)
    assert [f["name"] for f in keys["acme"].call("GET", "/v1/functions")["functions"]] == ["hello"]

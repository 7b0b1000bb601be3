"""PATCH /v1/functions/NAME/scaling on a real gateway and Redis: a new version of the same
image with the [scaling] fields replaced, validated as a manifest is; nothing new when
nothing changes; the deploy scope; another tenant's function is 404; the audit entry;
`gantry scaling` (through the SDK) as a user runs it."""
from __future__ import annotations

import pytest

from gantry import keys
from gantry.state import unpack
from gantry.tenants.model import Quotas, Tenant
from gantry.tenants.store import TenantStore

from .support import ADMIN_KEY, AUTH, gateway, spec_dict
from .test_tenant_cli import gantry
from .test_tenants import bearer, deploy, make_key, make_tenant

pytestmark = pytest.mark.timeout(60)


async def _deploy(client, name: str = "echo", **scaling) -> None:
    resp = await client.post("/v1/functions", json={"spec": spec_dict(name, scaling=scaling), "image": "img:a"},
                             headers=AUTH)
    assert resp.status == 201, await resp.text()


async def _patch(client, body, name: str = "echo", headers=AUTH):
    return await client.patch(f"/v1/functions/{name}/scaling", json=body, headers=headers)


async def test_a_patch_registers_a_new_version_of_the_same_image(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=5, concurrency=4, idle_timeout="2m")
        resp = await _patch(client, {"min_instances": 2, "target_utilization": 0.5, "scale_up_cooldown": "30s",
                                     "scale_down_cooldown": "5m"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert (body["name"], body["version"], body["active"], body["changed"]) == ("echo", 2, 1, True)
        assert body["scaling"] == {"min_instances": 2, "max_instances": 5, "concurrency": 4, "idle_timeout": 120.0,
                                   "keep_paused": 300.0, "target_utilization": 0.5, "scale_up_cooldown": 30.0,
                                   "scale_down_cooldown": 300.0}
        v1 = redis_client.hgetall(keys.function_version("echo", 1))
        v2 = redis_client.hgetall(keys.function_version("echo", 2))
        assert v2[b"image"] == v1[b"image"] == b"img:a"
        old, new = unpack(v1[b"spec"]), unpack(v2[b"spec"])
        assert new["scaling"] == body["scaling"]
        assert {k: v for k, v in new.items() if k != "scaling"} == {k: v for k, v in old.items() if k != "scaling"}
        assert redis_client.hget(keys.function("echo"), "latest") == b"2"
        detail = await (await client.get("/v1/functions/echo", headers=AUTH)).json()
        assert (detail["latest"], detail["image"], detail["spec"]["scaling"]) == (2, "img:a", body["scaling"])
        # fields left out keep their value; a later patch builds on the latest version
        body = await (await _patch(client, {"max_instances": 8})).json()
        assert body["version"] == 3 and body["scaling"]["min_instances"] == 2 and body["scaling"]["max_instances"] == 8


async def test_a_patch_that_changes_nothing_makes_no_version(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=5, scale_down_cooldown="1m")
        for same in ({"max_instances": 5}, {"scale_down_cooldown": 60}, {"scale_down_cooldown": "60s"}):
            resp = await _patch(client, same)
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert (body["version"], body["active"], body["changed"]) == (1, 1, False), same
            assert body["scaling"]["max_instances"] == 5
        assert redis_client.hget(keys.function("echo"), "latest") == b"1"
        assert not redis_client.exists(keys.function_version("echo", 2))
        entries = (await (await client.get("/v1/audit", headers=AUTH)).json())["entries"]
        assert [e["action"] for e in entries] == ["function.deploy"]       # nothing changed: nothing audited


@pytest.mark.parametrize("body, expected", [
    ({"min_instances": -1}, "scaling.min_instances: expected a whole number from 0 to 10000, got -1"),
    ({"min_instances": 6}, "scaling.min_instances: expected at most max_instances (5), got 6"),
    ({"max_instances": 1, "min_instances": 2}, "scaling.min_instances: expected at most max_instances (1), got 2"),
    ({"max_instances": 0}, "scaling.max_instances: expected a whole number from 1 to 10000, got 0"),
    ({"concurrency": "4"}, "scaling.concurrency: expected a whole number"),
    ({"target_utilization": 0}, "scaling.target_utilization: expected a number from 0.01 to 1, got 0"),
    ({"target_utilization": 1.5}, "scaling.target_utilization: expected a number from 0.01 to 1"),
    ({"scale_up_cooldown": "soon"}, "scaling.scale_up_cooldown: expected a duration"),
    ({"scale_down_cooldown": "90d"}, "scaling.scale_down_cooldown: expected a duration from 0 to 30 days"),
    ({"idle_timeout": True}, "scaling.idle_timeout: "),
    ({"memory": "1Gi"}, "unknown field 'memory'; expected any of min_instances, max_instances"),
    ({}, "expected at least one of min_instances"),
])
async def test_a_bad_patch_is_400_naming_the_field(redis_url, redis_client, body, expected):
    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=5)
        resp = await _patch(client, body)
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "bad_request" and error["message"].startswith(expected), error
        assert redis_client.hget(keys.function("echo"), "latest") == b"1"      # nothing registered


async def test_unknown_function_unreadable_body_and_no_key(redis_url):
    async with gateway(redis_url) as client:
        resp = await _patch(client, {"min_instances": 1}, name="nope")
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
        await _deploy(client)
        resp = await client.patch("/v1/functions/echo/scaling", data=b"[1]", headers=AUTH)
        assert resp.status == 400
        assert (await client.patch("/v1/functions/echo/scaling", json={"min_instances": 1})).status == 401


async def test_the_deploy_scope_is_needed_and_another_tenants_function_is_404(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await make_tenant(client, "acme")
        await make_tenant(client, "globex")
        acme_deploy = await make_key(client, "acme", "deploy")
        acme_invoke = await make_key(client, "acme", "invoke")
        globex_deploy = await make_key(client, "globex", "deploy")
        await deploy(client, acme_deploy, "work")
        resp = await _patch(client, {"min_instances": 1}, "work", bearer(acme_invoke))
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
        only_other = await make_key(client, "acme", "deploy", functions=["other"])
        resp = await _patch(client, {"min_instances": 1}, "work", bearer(only_other))
        assert resp.status == 403 and "limited to the functions other" in (await resp.json())["error"]["message"]
        resp = await _patch(client, {"min_instances": 1}, "work", bearer(globex_deploy))
        assert resp.status == 404
        assert redis_client.hget(keys.function("acme.work"), "latest") == b"1"
        body = await (await _patch(client, {"min_instances": 1}, "work", bearer(acme_deploy))).json()
        assert (body["name"], body["version"]) == ("work", 2)
        # the platform admin names it qualified
        body = await (await _patch(client, {"min_instances": 0}, "acme.work")).json()
        assert (body["name"], body["version"], body["scaling"]["min_instances"]) == ("acme.work", 3, 0)
        spec = unpack(redis_client.hget(keys.function_version("acme.work", 3), "spec"))
        assert spec["tenant"] == "acme" and spec["name"] == "work"


async def test_the_change_is_audited_with_what_changed(redis_url):
    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=5)
        await _patch(client, {"min_instances": 1, "max_instances": 5, "scale_up_cooldown": "30s"})
        entries = (await (await client.get("/v1/audit", headers=AUTH)).json())["entries"]
        assert [(e["action"], e["target"], e["tenant"]) for e in entries] == [
            ("function.deploy", "echo", "default"), ("function.scaling", "echo", "default")]
        assert entries[1]["detail"] == {"version": 2, "min_instances": 1, "scale_up_cooldown": 30.0}


async def test_min_instances_above_the_instances_quota_is_403(redis_url, redis_client, aredis):
    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=10)
        assert await TenantStore(aredis).put_tenant(Tenant(id="default", quotas=Quotas(instances=3)), create=False)
        resp = await _patch(client, {"min_instances": 4})
        assert resp.status == 403, await resp.text()
        err = (await resp.json())["error"]
        assert (err["code"], err["resource"], err["limit"]) == ("quota_exceeded", "instances", 3)
        assert redis_client.hget(keys.function("echo"), "latest") == b"1"
        assert (await _patch(client, {"min_instances": 3})).status == 200


async def test_gantry_scaling_from_the_cli(redis_url, redis_client):
    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=5)
        url = str(client.make_url("")).rstrip("/")
        rc, out, err = await gantry(url, ADMIN_KEY, "scaling", "echo", "--min", "1", "--max", "8", "--target", "0.8",
                                    "--scale-up-cooldown", "30s", "--scale-down-cooldown", "5m")
        assert rc == 0, err
        assert out.startswith("echo: version 2 registered (active 1;"), out
        assert "min 1, max 8, concurrency 4, target_utilization 0.8" in out
        assert "scale_up_cooldown 30s, scale_down_cooldown 300s" in out
        spec = unpack(redis_client.hget(keys.function_version("echo", 2), "spec"))
        assert (spec["scaling"]["min_instances"], spec["scaling"]["scale_down_cooldown"]) == (1, 300.0)
        rc, out, err = await gantry(url, ADMIN_KEY, "scaling", "echo", "--min", "1")
        assert rc == 0 and out.startswith("echo: unchanged (version 2)"), (out, err)
        rc, out, err = await gantry(url, ADMIN_KEY, "scaling", "echo", "--min", "9")
        assert rc == 1 and err.strip() == ("gantry: error: 400 bad_request: scaling.min_instances: expected at most "
                                           "max_instances (8), got 9"), err
        rc, out, err = await gantry(url, ADMIN_KEY, "scaling", "echo")
        assert rc == 1 and "give at least one of --min" in err and "Traceback" not in err
        assert redis_client.hget(keys.function("echo"), "latest") == b"2"


async def test_async_client_configure_scaling(redis_url):
    from gantry import AsyncClient
    from gantry.sdk import BadRequest

    async with gateway(redis_url) as client:
        await _deploy(client, max_instances=5)
        async with AsyncClient(str(client.make_url("")).rstrip("/"), ADMIN_KEY, timeout=30) as sdk:
            answer = await sdk.configure_scaling("echo", max_instances=6, keep_paused="0s")
            assert (answer["version"], answer["changed"], answer["scaling"]["keep_paused"]) == (2, True, 0.0)
            with pytest.raises(BadRequest, match="scaling.concurrency: expected a whole number"):
                await sdk.configure_scaling("echo", concurrency=0)

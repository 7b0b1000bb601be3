"""The SDK (gantry.Client, gantry.AsyncClient) against the real platform: every method, on one
platform and one deployment of tests/e2e/functions/async-work for the module; the typed
errors by code; `gantry logs` filters and lines; a removed function's logs gone with it."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import uuid

import pytest

from gantry import AsyncClient, Client
from gantry.sdk import (BadRequest, Conflict, FunctionError, IdempotencyConflict, NotFound, QuotaExceeded,
                        Unauthorized, WaitTimeout)
from gantry.sdk.types import Deployment, LogEntry

from conftest import running_platform

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "functions", "async-work")
NAME = "async-work"


@pytest.fixture(scope="module")
def module_platform(redis_url, docker_client, tmp_path_factory):
    """One platform for the module (its tests share the deployment), with a secrets master key."""
    saved = {k: os.environ.pop(k, None) for k in ("GANTRY_SECRETS_KEY", "GANTRY_SECRETS_KEY_FILE")}
    os.environ["GANTRY_SECRETS_KEY"] = base64.b64encode(os.urandom(32)).decode()
    try:
        with running_platform(redis_url, docker_client, str(tmp_path_factory.mktemp("platform"))) as p:
            yield p
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="module")
def sdk(module_platform) -> Client:
    return Client(module_platform.client.url, module_platform.client.api_key, timeout=60)


@pytest.fixture(scope="module")
def deployed(sdk) -> Deployment:
    lines: list[str] = []
    done = sdk.deploy(WORK, progress=lines.append, wait=60)
    assert lines and lines[-1] == f"deployed {NAME} version 1 ({done.image})"
    return done


def test_deploy_functions_versions_nodes_scale(sdk, deployed, module_platform):
    assert (deployed.name, deployed.tenant, deployed.version, deployed.active) == (NAME, "default", 1, 1)
    assert deployed.invoke_url == f"{sdk.url}/v1/invoke/{NAME}"
    assert [f["name"] for f in sdk.list_functions()] == [NAME]
    assert [f["name"] for f in sdk.list_functions(tenant="default")] == [NAME]
    fn = sdk.get_function(NAME)
    assert fn["active"] == 1 and fn["spec"]["name"] == NAME and isinstance(fn["instances"], list)
    again = sdk.deploy_image(_spec(fn), deployed.image)
    assert again.version == 2
    assert module_platform.wait("version 2 active", lambda: sdk.versions(NAME) == (2, 2), timeout=60)
    nodes = sdk.nodes()
    assert len(nodes) == 1 and nodes[0]["id"].startswith("e2e-") and nodes[0]["capacity"]["cpu"] == 8000
    sdk.scale(NAME, 1)
    assert sdk.get_function(NAME)["min_override"] == 1
    sdk.scale(NAME, 0)
    with pytest.raises(BadRequest) as bad:
        sdk.scale(NAME, -1)
    assert bad.value.status == 400 and bad.value.code == "bad_request" and "min_instances" in bad.value.message
    with pytest.raises(NotFound):
        sdk.get_function("no-such-fn")


def _spec(fn: dict) -> dict:
    spec = dict(fn["spec"])
    spec.pop("tenant", None)
    return spec


def test_invoke_sync_stream_and_typed_errors(sdk, deployed):
    res = sdk.invoke(NAME, {"n": 7})
    assert res.status == 200 and res.json()["n"] == 7 and res.invocation_id == res.json()["invocation_id"]
    assert res.content_type.startswith("application/json")
    assert json.loads(b"".join(sdk.invoke(NAME, {"n": 8}, stream=True)))["n"] == 8
    with pytest.raises(FunctionError) as failed:
        sdk.invoke(NAME, {"fail": True, "n": 9})
    assert failed.value.status == 500 and failed.value.code == "function_error" and "poison 9" in failed.value.message
    with pytest.raises(NotFound) as nf:
        sdk.invoke("no-such-fn", {})
    assert nf.value.code == "not_found"
    with pytest.raises(Unauthorized):
        Client(sdk.url, "gk_wrong_" + "0" * 32).nodes()
    with pytest.raises(ValueError):
        sdk.invoke(NAME, {}, priority="high")                     # needs mode="async"


def test_async_invoke_wait_result_cancel_and_dead_letters(sdk, deployed):
    key = uuid.uuid4().hex
    sub = sdk.invoke(NAME, {"n": 1}, mode="async", idempotency_key=key, priority="high")
    assert sub["state"] == "queued" and not sub["idempotent_replay"]
    again = sdk.invoke(NAME, {"n": 1}, mode="async", idempotency_key=key)
    assert again["id"] == sub["id"] and again["idempotent_replay"]
    with pytest.raises(IdempotencyConflict) as conflict:
        sdk.invoke(NAME, {"n": 2}, mode="async", idempotency_key=key)
    assert conflict.value.status == 422
    done = sdk.wait(sub["id"], timeout=60)
    assert done["state"] == "succeeded" and done["result"]["n"] == 1
    assert sdk.get_invocation(sub["id"])["state"] == "succeeded"
    assert sdk.invocation_result(sub["id"]).json()["n"] == 1
    with pytest.raises(Conflict):
        sdk.cancel(sub["id"])                                     # settled: nothing to cancel
    with pytest.raises(NotFound):
        sdk.get_invocation("0" * 32)

    slow = sdk.invoke(NAME, {"sleep": 3}, mode="async")
    with pytest.raises(WaitTimeout):
        sdk.wait(slow["id"], timeout=0.3)

    dead = sdk.invoke(NAME, {"fail": True, "n": 3}, mode="async")
    assert sdk.wait(dead["id"], timeout=60)["state"] == "dead"
    failed = sdk.invocation_result(dead["id"])
    assert failed.status == 500 and json.loads(failed.body)["error"]["code"] == "function_error"
    assert dead["id"] in [d["id"] for d in sdk.dead_letters(function=NAME)]
    assert sdk.get_dead_letter(dead["id"])["attempts"] == 3
    assert sdk.replay(dead["id"])["state"] == "queued"
    assert sdk.wait(dead["id"], timeout=60)["state"] == "dead"
    sdk.purge(dead["id"])
    with pytest.raises(NotFound):
        sdk.get_dead_letter(dead["id"])
    assert sdk.wait(slow["id"], timeout=60)["state"] == "succeeded"


def test_logs_filters_and_follow(sdk, deployed, module_platform, capsys):
    from gantry.cli import main

    sdk.invoke(NAME, {"n": 11})
    with pytest.raises(FunctionError):
        sdk.invoke(NAME, {"fail": True, "n": 12})
    def poison_12_shipped():
        found = sdk.logs(NAME, level="error")
        return found if any("poison 12" in (e.fields or {}).get("traceback", "") for e in found) else None
    entries = module_platform.wait("the error line shipped", poison_12_shipped, timeout=30)
    assert all(isinstance(e, LogEntry) and e.level in ("error", "critical") for e in entries)
    assert all(e.message == "function error" for e in entries)
    everything = sdk.logs(NAME)
    assert len(everything) > len(entries) and {e.level for e in everything} >= {"info", "error"}
    assert sdk.logs(NAME, since="1h") == everything
    assert sdk.logs(NAME, since=time.time() + 3600) == []
    last = sdk.logs(NAME, tail=2)
    assert [e.id for e in last] == [e.id for e in everything[-2:]]
    short = everything[-1].format().split()[2]                    # the short instance id shown
    mine = sdk.logs(NAME, instance=short)
    assert mine and all(e.instance.rpartition("-")[2].startswith(short) for e in mine)

    async def follow() -> LogEntry:
        async with AsyncClient(sdk.url, sdk.api_key) as ac:
            stream = ac.stream_logs(NAME, tail=1, poll=0.2)
            await stream.__anext__()                             # the newest line: now following
            res = await ac.invoke(NAME, {"n": 13})
            inv = res.json()["invocation_id"]
            async for entry in stream:
                if entry.fields and entry.fields.get("invocation_id") == inv:
                    return entry
    seen = asyncio.run(asyncio.wait_for(follow(), 30))
    assert seen.message == "attempt started"

    auth = ["--url", sdk.url, "--api-key", sdk.api_key]
    assert main(["logs", NAME, "--level", "error", "--tail", "1", *auth]) == 0
    out = capsys.readouterr().out.splitlines()
    head = out[0].split()
    assert head[1] == "ERROR" and len(head[2]) == 8 and head[3:5] == ["function", "error"]
    assert "error=" in out[0] and any(line.startswith("    Traceback") for line in out[1:])
    assert main(["logs", NAME, "--json", "--tail", "2", *auth]) == 0
    raw = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in raw] == [e.id for e in sdk.logs(NAME, tail=2)] and set(raw[0]) == {"id", "instance", "line"}


def test_health_answers_without_a_key_and_unreachable_is_typed(sdk, module_platform):
    health = Client(sdk.url, "gk_not_a_key").health(timeout=5)      # no key needed: a wrong one is not looked at
    assert health["status"] == "ok" and health["gateway"]
    from gantry.sdk import ConnectionFailed
    with socket.socket() as s:            # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(ConnectionFailed):
            Client(closed, "k").health(timeout=2)


def test_async_client_covers_the_same_calls(sdk, deployed):
    async def go():
        async with AsyncClient(sdk.url, sdk.api_key, timeout=60) as ac:
            assert [f["name"] for f in await ac.list_functions()] == [NAME]
            assert (await ac.get_function(NAME))["name"] == NAME
            assert (await ac.versions(NAME))[1] >= 1 and len(await ac.nodes()) == 1
            assert (await ac.health(timeout=5))["status"] == "ok"
            assert (await ac.invoke(NAME, {"n": 21})).json()["n"] == 21
            chunks = [c async for c in await ac.invoke(NAME, {"n": 22}, stream=True)]
            assert json.loads(b"".join(chunks))["n"] == 22
            sub = await ac.invoke(NAME, {"n": 23}, mode="async", priority="low")
            assert (await ac.wait(sub["id"], timeout=60))["result"]["n"] == 23
            assert (await ac.get_invocation(sub["id"]))["state"] == "succeeded"
            assert (await ac.invocation_result(sub["id"])).json()["n"] == 23
            with pytest.raises(Conflict):
                await ac.cancel(sub["id"])
            with pytest.raises(FunctionError):
                await ac.invoke(NAME, {"fail": True})
            with pytest.raises(NotFound):
                await ac.get_function("no-such-fn")
            assert [d async for d in ac.dead_letters(function=NAME)] == []
            assert (await ac.logs(NAME, tail=1))[0].id
            assert (await ac.whoami())["scope"] == "admin"
            await ac.scale(NAME, 0)
    asyncio.run(go())


def test_tenants_keys_secrets_usage_schedules_audit(sdk, deployed, module_platform):
    t = "sdk" + uuid.uuid4().hex[:6]
    assert sdk.create_tenant(t, name="SDK test", quotas={"functions": 0})["id"] == t
    assert sdk.get_tenant(t)["name"] == "SDK test" and t in [x["id"] for x in sdk.list_tenants()]
    with pytest.raises(QuotaExceeded) as quota:
        sdk.deploy_image(_spec(sdk.get_function(NAME)), deployed.image, tenant=t)
    assert (quota.value.resource, quota.value.current, quota.value.limit) == ("functions", 0, 0)
    assert sdk.update_tenant(t, name="renamed")["name"] == "renamed"

    made = sdk.create_key(tenant=t, scope="deploy", note="sdk test")
    tenant_client = Client(sdk.url, made["key"])
    assert tenant_client.whoami()["tenant"] == t
    assert made["id"] in [k["id"] for k in sdk.list_keys(tenant=t)]
    sdk.revoke_key(made["id"])
    module_platform.wait("the revoked key refused", lambda: _refused(tenant_client), timeout=10)

    assert sdk.set_secret("API_TOKEN", "s3cret", tenant=t)["created"]
    listed = sdk.list_secrets(tenant=t)
    assert listed["tenant"] == t and [s["name"] for s in listed["secrets"]] == ["API_TOKEN"]
    assert "s3cret" not in json.dumps(listed)
    sdk.delete_secret("API_TOKEN", tenant=t)
    assert sdk.list_secrets(tenant=t)["secrets"] == []

    own = module_platform.wait("usage flushed", lambda: (u := sdk.usage())["functions"].get(NAME) and u, timeout=30)
    assert own["tenant"] == "default" and own["functions"][NAME]["invocations"] > 0
    assert sdk.usage(tenant=t)["tenant"] == t
    assert any(e.get("action") == "tenant.create" for e in sdk.audit(tenant=t)["entries"])
    assert sdk.schedules() == [] and sdk.schedules(function=NAME) == []
    assert sdk.callback_secret()["secret"]
    assert sdk.delete_tenant(t)["removed"] is True
    with pytest.raises(NotFound):
        sdk.get_tenant(t)


def test_warm_decisions_and_metrics(sdk, deployed, module_platform):
    with pytest.raises(BadRequest):                          # async-work has max_instances 1
        sdk.warm(NAME, 2)
    sdk.scale(NAME, 0)
    held = sdk.warm(NAME, 1, for_="1m")
    assert held["instances"] == 1 and held["until"] > time.time()
    assert sdk.get_function(NAME)["warm"] == {"instances": 1, "until": held["until"]}
    module_platform.wait("a decision", lambda: sdk.decisions(NAME), timeout=30)
    assert len(sdk.decisions(NAME, limit=1)) == 1 and sdk.decisions(NAME)[0]["reason"]
    sdk.warm(NAME, 0)                                       # ends the hold
    assert sdk.get_function(NAME)["warm"] is None
    for i in range(3):
        sdk.invoke(NAME, {"n": i})
    # the gateway flushes its per-minute rows every few seconds
    report = module_platform.wait("the metrics", lambda: (
        lambda r: r if r["totals"]["invocations"] >= 3 else None)(sdk.get_metrics(NAME, range="1h")), timeout=30)
    assert report["totals"]["duration"]["p50"] > 0
    assert sdk.get_metrics(tenant="default")["totals"]["invocations"] >= 3
    with pytest.raises(ValueError):
        sdk.get_metrics()


def _refused(client: Client) -> bool:
    try:
        client.whoami()
    except Unauthorized:
        return True
    return False


def test_delete_function_takes_its_logs(sdk, deployed, module_platform, docker_client):
    assert sdk.logs(NAME)
    sdk.delete_function(NAME)
    with pytest.raises(NotFound):
        sdk.get_function(NAME)
    assert sdk.logs(NAME) == []
    # its instances drain and stop after the delete; lines they ship meanwhile are dropped
    # (the low-level list: containers.list inspects each one, which races with their removal)
    module_platform.wait("the instances gone", lambda: not [
        c for c in docker_client.api.containers(filters={"label": "gantry.managed=1"})
        if (c.get("Labels") or {}).get("gantry.node", "").startswith(f"e2e-{module_platform.run_id}")],
        timeout=40)
    assert sdk.logs(NAME) == []
    with pytest.raises(NotFound):
        sdk.delete_function(NAME)

"""Isolation levels end to end: the real scheduler places a ``node``-isolated tenant's
function only on the worker agent labelled for it (GANTRY_NODE_TENANT), a default-tenant
function only on the unlabelled one, and the labelled agent starts it on the tenant's own
network behind the host firewall.  The function records are written as the gateway's deploy
writes them (a tenant's deploy through the API is the tenant keys' part)."""
from __future__ import annotations

import asyncio
import subprocess

import docker.errors
import pytest
import redis
import redis.asyncio as aioredis

from gantry import keys, state
from gantry.manifest import FunctionSpec
from gantry.tenants.model import Isolation, Tenant
from gantry.tenants.store import TenantStore
from gantry.worker import isolation

from conftest import FAST_WORKER

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def _put_tenant(url: str, tenant: Tenant) -> None:
    async def put():
        r = aioredis.Redis.from_url(url)
        try:
            assert await TenantStore(r).put_tenant(tenant, create=True)
        finally:
            await r.aclose()
    asyncio.run(put())


def _deploy(r, spec: FunctionSpec, image: str) -> str:
    q = spec.qualified
    r.hset(keys.function_version(q, 1), mapping={"image": image, "spec": state.pack(spec.to_dict()), "created": "1"})
    r.hset(keys.function(q), mapping={"name": q, "latest": "1", "active": "1", "updated": "1"})
    r.sadd(keys.FUNCTIONS, q)
    r.publish(keys.EVENTS, f"function:{q}")
    return q


def _instances(r, name: str) -> list[state.Instance]:
    ids = [i.decode() for i in r.smembers(keys.function_instances(name))]
    found = [state.Instance.from_hash(r.hgetall(keys.instance(i))) for i in ids]
    return [i for i in found if i is not None]


def _networks_of(docker_client, instance_id: str) -> set[str]:
    """The networks an instance's container is on: its own, or those of the sandbox whose
    namespace it joined (a container made ahead of need, worker/spares.py)."""
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={instance_id}"})
    mode = container.attrs["HostConfig"]["NetworkMode"]
    if mode.startswith("container:"):
        sandbox = docker_client.containers.get(mode[len("container:"):])
        assert sandbox.labels["gantry.sandbox"] == instance_id
        return set(sandbox.attrs["NetworkSettings"]["Networks"])
    return set(container.attrs["NetworkSettings"]["Networks"])


def test_node_isolation_places_on_the_labelled_node_on_the_tenants_network(platform, kinds_build, docker_client):
    tenant = f"iso-{platform.run_id}"
    labelled = f"e2e-{platform.run_id}-n2"
    plain_node = f"e2e-{platform.run_id}-n1"
    platform.start(labelled, "worker", GANTRY_NODE_ID=labelled, GANTRY_NODE_TENANT=tenant, **FAST_WORKER)
    platform.wait("the labelled node", lambda: [n for n in platform.client.call("GET", "/v1/nodes")["nodes"]
                                                if n["id"] == labelled and n["tenant"] == tenant])
    _put_tenant(platform.redis_url, Tenant(tenant, isolation=Isolation.NODE))
    r = redis.Redis.from_url(platform.redis_url)
    try:
        base = FunctionSpec.from_dict({**kinds_build.spec.to_dict(), "handler": "main:echo"})
        scaling = {**base.to_dict()["scaling"], "min_instances": 2}
        isolated = _deploy(r, FunctionSpec.from_dict({**base.to_dict(), "name": "api", "tenant": tenant,
                                                      "scaling": scaling}), kinds_build.image)
        plain = _deploy(r, FunctionSpec.from_dict({**base.to_dict(), "name": "web", "scaling": scaling}),
                        kinds_build.image)

        def ready(name):
            found = _instances(r, name)
            return found if len(found) == 2 and all(i.state == state.READY for i in found) else None

        mine = platform.wait("the tenant's instances ready", lambda: ready(isolated))
        theirs = platform.wait("the default tenant's instances ready", lambda: ready(plain))
        assert {i.node for i in mine} == {labelled}
        assert {i.node for i in theirs} == {plain_node}
        for inst in mine:
            assert _networks_of(docker_client, inst.id) == {f"gantry-t-{tenant}"}
        for inst in theirs:
            assert _networks_of(docker_client, inst.id) == {"gantry-fn"}
        bridge = isolation.bridge_interface(docker_client.networks.get(f"gantry-t-{tenant}").attrs)
        assert f"-A GANTRY-ISOLATION -i {bridge} -j DROP" in isolation.installed_rules()
        # (the health checks reach them through the firewall: they became ready)
    finally:
        r.close()
        for name in list(platform.procs):          # the containers go first, then the network
            if name.startswith("e2e-"):
                platform.procs[name].terminate()
        for name in [n for n in list(platform.procs) if n.startswith("e2e-")]:
            try:
                platform.procs.pop(name).wait(30)
            except subprocess.TimeoutExpired:
                pass
        for container in docker_client.containers.list(all=True, filters={"label": "gantry.managed=1"}):
            if container.labels.get("gantry.node", "").startswith(f"e2e-{platform.run_id}"):
                container.remove(force=True)
        for network in docker_client.networks.list(names=[f"gantry-t-{tenant}"]):
            try:
                network.remove()
            except docker.errors.APIError:
                pass
        isolation.install(docker_client)

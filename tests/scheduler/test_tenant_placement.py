"""Node isolation and the isolation level in start commands (docs/tenants.md "Isolation
levels"): a node labelled for a tenant (GANTRY_NODE_TENANT) runs that tenant's instances
only, a ``node``-isolated tenant's instances run only there, and the scheduler tells the
worker the tenant's level.  Pure filters, then the scheduler on real Redis."""
from __future__ import annotations

import time

import pytest

from gantry import keys, state
from gantry.manifest import FunctionSpec, Resources, Scaling
from gantry.scheduler.placement import for_tenant, no_node_reason, node_takes
from gantry.scheduler.tenancy import isolation_of
from gantry.scheduler.writes import start_command
from gantry.tenants.model import DEFAULT, Isolation, Tenant
from gantry.tenants.store import TenantStore

from .fakes import FakeWorker, commands, field, instances, scheduler, settle

pytestmark = pytest.mark.timeout(30)
MiB = 2**20


def _node(node_id: str, tenant: str = "") -> state.Node:
    return state.Node(id=node_id, host="127.0.0.1", cpu=16000, memory=8192 * MiB, started=time.time(), tenant=tenant)


# --- pure ------------------------------------------------------------------------------------

def test_a_labelled_node_takes_only_its_tenant_and_node_isolation_only_labelled_nodes():
    free, acme, beta = _node("n1"), _node("n2", "acme"), _node("n3", "beta")
    nodes = [free, acme, beta]
    assert [n.id for n in for_tenant(nodes, "acme", "node")] == ["n2"]
    assert [n.id for n in for_tenant(nodes, "acme", "container")] == ["n1", "n2"]
    assert [n.id for n in for_tenant(nodes, "default", "shared")] == ["n1"]
    assert [n.id for n in for_tenant(nodes, "gamma", "node")] == []
    assert node_takes(free, "x", "shared") and not node_takes(free, "x", "node")
    assert not node_takes(beta, "acme", "shared")


def test_the_reason_names_the_tenant_and_the_setting():
    nodes = [_node("n1"), _node("n3", "beta")]
    assert no_node_reason("acme", "node", nodes).startswith(
        "no node is labelled for tenant acme (GANTRY_NODE_TENANT)")
    assert "labelled for another tenant" in no_node_reason("acme", "shared", [_node("n3", "beta")])
    assert no_node_reason("acme", "container", nodes) == ""
    assert no_node_reason("acme", "node", []) == ""        # no live node at all: the capacity reason says so


def test_isolation_of_a_tenant():
    assert isolation_of("default", None) == "shared" and isolation_of("default", DEFAULT) == "shared"
    assert isolation_of("gone", None) == "container"           # no record: never less isolated
    assert isolation_of("acme", Tenant("acme", isolation=Isolation.NODE)) == "node"


def test_the_start_command_carries_the_level_and_the_node_record_its_label():
    spec = FunctionSpec(name="f", handler="main:h")
    inst = state.Instance(id="f-1", function="f", version=1, node="n1", state=state.PENDING)
    assert state.unpack(start_command(inst, 1, "img", spec, "container"))["isolation"] == "container"
    assert "isolation" not in state.unpack(start_command(inst, 1, "img", spec))
    node = _node("n2", "acme")
    assert state.Node.from_hash(node.to_hash()) == node
    assert state.Node.from_hash(_node("n1").to_hash()).tenant == ""


# --- the scheduler on real Redis -------------------------------------------------------------

async def _add_node(r, node: state.Node) -> None:
    await r.hset(keys.node(node.id), mapping=node.to_hash())
    await r.sadd(keys.NODES, node.id)
    await r.set(keys.node_alive(node.id), "1", px=60_000)


async def _deploy(r, tenant: str, name: str, min_instances: int) -> str:
    """What the gateway's deploy does for TENANT; the qualified name."""
    spec = FunctionSpec(name=name, handler="main:handle", tenant=tenant, resources=Resources(cpu=0.5, memory=256 * MiB),
                        scaling=Scaling(min_instances=min_instances, max_instances=10, concurrency=4))
    q = spec.qualified
    await r.hset(keys.function_version(q, 1), mapping={"image": f"gantry/{name}:v1", "spec": state.pack(spec.to_dict()),
                                                       "created": str(time.time())})
    await r.hset(keys.function(q), mapping={"name": q, "latest": "1", "active": "1", "updated": str(time.time())})
    await r.sadd(keys.FUNCTIONS, q)
    return q


async def test_placement_follows_node_labels_and_the_worker_is_told_the_level(aredis):
    r = aredis
    tenants = TenantStore(r)
    assert await tenants.put_tenant(Tenant("acme", isolation=Isolation.NODE), create=True)
    assert await tenants.put_tenant(Tenant("beta", isolation=Isolation.CONTAINER), create=True)
    for node in (_node("n1"), _node("n2", "acme"), _node("n3", "beta")):
        await _add_node(r, node)
    acme = await _deploy(r, "acme", "api", 3)
    beta = await _deploy(r, "beta", "api", 4)
    plain = await _deploy(r, "default", "web", 3)
    # more functions, so that the hash ring alone cannot put them all where the labels do
    others = [await _deploy(r, t, f"f{i}", 1) for i in range(6) for t in ("default", "acme")]
    s = scheduler(r)
    workers = [FakeWorker(r, n) for n in ("n1", "n2", "n3")]
    starts = {}
    await s._iteration()
    for w in workers:
        starts.update({c["instance"]: c for c in await commands(r, w.node_id) if c["op"] == "start"})
    await settle(s, workers)

    placed = {name: {i.node for i in await instances(r, name)} for name in (acme, beta, plain)}
    assert placed[acme] == {"n2"}
    assert placed[beta] <= {"n1", "n3"}
    assert placed[plain] == {"n1"}
    assert {n: {i.node for i in await instances(r, n)} for n in others} == {
        n: {"n2" if n.startswith("acme.") else "n1"} for n in others}
    assert [len(await instances(r, name)) for name in (acme, beta, plain)] == [3, 4, 3]
    levels = {starts[i.id]["function"]: starts[i.id]["isolation"]
              for name in (acme, beta, plain) for i in await instances(r, name)}
    assert levels == {acme: "node", beta: "container", plain: "shared"}


async def test_a_node_isolated_tenant_without_a_labelled_node_waits_and_says_why(aredis):
    r = aredis
    assert await TenantStore(r).put_tenant(Tenant("acme", isolation=Isolation.NODE), create=True)
    await _add_node(r, _node("n1"))
    await _add_node(r, _node("n3", "beta"))
    name = await _deploy(r, "acme", "api", 1)
    s = scheduler(r)
    await s._iteration()
    assert await instances(r, name) == []
    reason = await field(r, name, "pending_reason")
    assert reason.startswith("no node is labelled for tenant acme (GANTRY_NODE_TENANT)"), reason

    await _add_node(r, _node("n2", "acme"))      # label a node: the instance goes there
    await s._iteration()
    assert [i.node for i in await instances(r, name)] == ["n2"]
    assert not await field(r, name, "pending_reason")

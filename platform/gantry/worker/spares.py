"""Containers created ahead of need (issue 16 part 4): a cold start that is Docker's start alone.

A cold start spent most of its Docker time in ``start`` making the container's network
namespace (veth, bridge port, published port: 400-600 ms of ``POST /start`` on this two-core
machine), and some in ``create``.  For a function this node has run (its image and spec are
known from a start command), and that is deployed at that version with fewer instances than
its ``max_instances``, the worker keeps one *spare* ready:

- a **sandbox**: a started container that does nothing (``sleep``) and holds a network
  namespace on the function's network (the tenant's own at ``container``/``node``
  isolation) with the runtime port published: the Kubernetes pod-sandbox pattern;
- the instance's **container**, created (never started) with ``network_mode`` joining that
  namespace, under an instance id the worker chose (the scheduler's format), with its own
  fresh instance key and the coordination token for that id.

The worker offers the spare in Redis (keys.node_spares: function -> "VERSION:ID"); the
scheduler, placing an instance of that function and version on this node, takes the entry
(keys.TAKE_SPARE, fenced) and gives the instance that id, so everything bound at create (name,
labels, key, coordination token, port) is already the instance's.  The start command then
claims the spare: ``docker start`` of the container, one inspect for the port.

Isolation holds: the sandbox is made like an instance (non-root, read-only, no capabilities,
no-new-privileges, pids/memory/CPU limits) on the very network the instance would join, and a
namespace serves one instance only: it is removed with the instance's container
(containers.force_remove), never handed on.  A spare is no instance: no record, no
reservation (a created container holds no CPU or memory; a running sandbox about 14 MiB of
host memory, nearly all its containerd-shim, and no CPU: MAX_PER_NODE bounds them), never
counted by the scheduler.  It is withdrawn (keys.WITHDRAW_SPARE; a taken one is
the starting instance's and stays) and removed when the version changes, the function is
deleted or reaches its maximum, the worker stops, or at the orphan sweep (labels gantry.spare
and gantry.sandbox; one without a record that the agent does not hold is an orphan).

Functions that name secrets (their files are bound at create), lease GPUs, or run a vLLM
engine get no spare.  GANTRY_PRECREATE=0 turns spares off.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import docker.errors

from gantry_runtime.wire import new_instance_key

from ..manifest import FunctionSpec
from . import isolation, vllmengine
from .containers import (LABEL_EPOCH, LABEL_FUNCTION, LABEL_INSTANCE, LABEL_NODE, LABEL_SANDBOX, LABEL_SPARE,
                         LABEL_VERSION, create as create_container, join_sandbox, network_id, node_filter)
from .containerspec import (FUNCTION_USER, LABEL_MANAGED, LABEL_RUNTIME, RUNTIME_PORT, container_kwargs,
                            network_name, published_port_of)

log = logging.getLogger("gantry.worker")

SANDBOX_COMMAND = ["sleep", "infinity"]
SANDBOX_MEMORY = "16m"
SANDBOX_PIDS = 8
SANDBOX_NANO_CPUS = 50_000_000      # 0.05 CPU: it only sleeps
# Spares a node keeps at most: each running sandbox costs about 14 MiB of host memory (its
# containerd-shim; tini and sleep well under 1 MiB), the created containers nothing.
MAX_PER_NODE = 32


@dataclass
class Spare:
    function: str
    instance: str
    version: int
    image: str
    isolation: str
    container: str = ""      # set once made: the container's id, ...
    sandbox: str = ""        # ... its sandbox's, ...
    port: int = 0            # ... the port the sandbox publishes, ...
    key: str = ""            # ... and the instance key the container holds

    @property
    def precreated(self) -> tuple[str, int, str]:
        """What containers.start needs to start it: (id, port, key)."""
        return self.container, self.port, self.key

    @property
    def entry(self) -> str:
        """What the worker offers in keys.node_spares."""
        return f"{self.version}:{self.instance}"

    def serves(self, version: int, image: str, isolation_level: str) -> bool:
        return (self.version, self.image, self.isolation) == (version, image, isolation_level)


# --- pure decisions ----------------------------------------------------------------------------

def eligible(spec: FunctionSpec, gpu_lease: str = "") -> bool:
    """Whether a function's instances can be made ahead: not when they name secrets (the
    files are bound at create and written for the instance at start), lease GPUs or run
    a vLLM engine."""
    return not spec.secrets and not gpu_lease and not spec.resources.wants_gpu and spec.runtime != vllmengine.RUNTIME


def wanted(deployed: tuple[int, int] | None, version: int, counted: int, max_instances: int) -> bool:
    """Whether to keep a spare of VERSION: the function is deployed (DEPLOYED: its active
    and latest versions) at that version and has fewer instances (live or paused: COUNTED)
    than its maximum, so another may start."""
    return deployed is not None and version in deployed and counted < max_instances


def new_id(function: str) -> str:
    """An instance id in the scheduler's own format (reconcile.new_instance_id)."""
    return f"{function}-{uuid.uuid4().hex[:12]}"


# --- Docker (blocking: the agent's thread pool) -------------------------------------------------

def sandbox_kwargs(spec: FunctionSpec, image: str, instance: str, *, network: str, node: str,
                   publish_host: str) -> dict:
    """A namespace holder made like an instance (containerspec's hardening) that runs
    nothing but sleep: on the function network, with the runtime port published."""
    return dict(
        image=image, command=SANDBOX_COMMAND,
        name=f"gantry-{spec.qualified}-{instance}-sandbox",
        # the instance it serves under its own label, not gantry.instance: a look-up of the
        # instance's container finds that container alone
        labels={LABEL_MANAGED: "1", LABEL_FUNCTION: spec.qualified, "gantry.tenant": spec.tenant, LABEL_NODE: node,
                LABEL_SANDBOX: instance, LABEL_SPARE: "1", LABEL_RUNTIME: spec.runtime},
        user=FUNCTION_USER, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        privileged=False, init=True, pids_limit=SANDBOX_PIDS, mem_limit=SANDBOX_MEMORY,
        memswap_limit=SANDBOX_MEMORY, nano_cpus=SANDBOX_NANO_CPUS, network=network,
        ports={RUNTIME_PORT: (publish_host, None)},
        log_config={"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
    )


def make_sandbox(client, node: str, host: str, spec: FunctionSpec, image: str, instance: str,
                 isolation_level: str = isolation.SHARED) -> tuple[str, int]:
    """Create and start the sandbox of INSTANCE; (its id, the port it publishes)."""
    name = network_name(spec, isolation_level)
    network = network_id(client, name)  # first: the firewall below covers the network's bridge
    if isolation.is_isolated_network(name):
        isolation.install(client)        # never a namespace on an unprotected isolated bridge
    sandbox = create_container(client, sandbox_kwargs(spec, image, instance, network=network, node=node,
                                                      publish_host=host))
    try:
        client.api.start(sandbox)
        port = published_port_of(client.api.inspect_container(sandbox))
        if port is None:
            raise RuntimeError(f"sandbox {sandbox[:12]} has no published port")
    except Exception:
        client.api.remove_container(sandbox, force=True)
        raise
    return sandbox, port


def create(client, node: str, host: str, spec: FunctionSpec, image: str, instance: str, version: int, *,
           sandbox: str | None, drain_grace: float = 10.0, isolation_level: str = isolation.SHARED
           ) -> tuple[str, str]:
    """Create (not start) INSTANCE's container as containers.start would, joining SANDBOX's
    namespace when given; (its id, its instance key).  Its epoch label is 0: no command made it."""
    key = new_instance_key()
    kwargs = container_kwargs(spec, image, instance, key=key,
                              network=network_id(client, network_name(spec, isolation_level)), publish_host=host,
                              labels={LABEL_NODE: node, LABEL_VERSION: str(version), LABEL_EPOCH: "0",
                                      LABEL_SPARE: "1"},
                              env={"GANTRY_DRAIN_GRACE": f"{drain_grace:g}"})
    return create_container(client, join_sandbox(kwargs, sandbox) if sandbox else kwargs), key


def make(client, node: str, host: str, spec: FunctionSpec, spare: Spare, drain_grace: float) -> Spare:
    """Make SPARE's sandbox and container (removing what was made if either fails)."""
    try:
        spare.sandbox, spare.port = make_sandbox(client, node, host, spec, spare.image, spare.instance,
                                                 spare.isolation)
        spare.container, spare.key = create(client, node, host, spec, spare.image, spare.instance, spare.version,
                                 sandbox=spare.sandbox, drain_grace=drain_grace, isolation_level=spare.isolation)
    except Exception:
        remove(client, node, spare.instance)
        raise
    return spare


def remove(client, node: str, instance: str) -> int:
    """Remove every container of INSTANCE on NODE (the spare's container and sandbox); how many."""
    removed = 0
    for label in (LABEL_INSTANCE, LABEL_SANDBOX):
        for c in client.api.containers(all=True, filters=node_filter(node, **{label: instance})):
            try:
                client.api.remove_container(c["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
    return removed

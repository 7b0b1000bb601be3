"""Blocking Docker calls of the worker agent (run in its thread pool, never on the loop).

Every container the agent creates carries gantry.managed=1 and gantry.node=NODE, so a node
only ever touches its own containers even when several agents share one engine.  The function
network (containerspec.network_name) is shared by every agent of the engine.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import docker.errors

from gantry_runtime.wire import StartFailure, new_instance_key

from ..manifest import FunctionSpec
from . import isolation
from .containerspec import (LABEL_MANAGED, container_kwargs, instance_key, instance_key_of, is_function_network,
                            network_kwargs, network_name, published_port_of)

log = logging.getLogger("gantry.worker")

LABEL_NODE = "gantry.node"
LABEL_INSTANCE = "gantry.instance"
LABEL_FUNCTION = "gantry.function"
LABEL_VERSION = "gantry.version"
LABEL_EPOCH = "gantry.epoch"
# a container made ahead of need (worker/spares.py; it keeps the label once an instance's),
# and a network-namespace holder, labelled with the instance it serves (not gantry.instance)
LABEL_SPARE = "gantry.spare"
LABEL_SANDBOX = "gantry.sandbox"
STOP_MARGIN = 2.0   # seconds past the drain grace before Docker sends SIGKILL: the runtime's own exit


@dataclass
class Exited:
    """Why a container is not running: its exit code and what it said last about it."""
    status: str
    exit_code: int | None
    oom: bool
    last_line: str       # the cause: the last line on stderr (a traceback ends with the exception), else on stdout
    start_failure: str = ""   # the runtime's structured start-failure line, "what: cause" (wire.StartFailure)

    def reason(self) -> str:
        if self.status == "gone":
            return "container disappeared"
        if self.start_failure and not self.oom:
            return self.start_failure
        what = f"container exited with code {self.exit_code}" + (" (out of memory)" if self.oom else "")
        return f"{what}: {self.last_line}" if self.last_line else what


def node_filter(node: str, **labels: str) -> dict:
    return {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_NODE}={node}",
                      *(f"{k}={v}" for k, v in labels.items())]}


def node_containers(client, node: str) -> list:
    """Every container (running or not) of this node."""
    return client.containers.list(all=True, filters=node_filter(node), ignore_removed=True)


def find(client, node: str, instance: str):
    """This node's container of the instance, or None."""
    found = [c for c in client.containers.list(all=True, filters=node_filter(node, **{LABEL_INSTANCE: instance}),
                                               ignore_removed=True) if not is_sandbox(c.labels)]
    return found[0] if found else None


def is_sandbox(labels: dict) -> bool:
    return bool(labels.get(LABEL_SANDBOX))


def instance_of(labels: dict) -> str:
    """The instance a container of this node is for: its own, or the one a sandbox serves."""
    return labels.get(LABEL_INSTANCE) or labels.get(LABEL_SANDBOX) or ""


# (id(client), network name) -> its id: a start looks the network up once per worker, not
# per start; a create that finds it gone (``docker network rm``) forgets it and looks again.
_NETWORK_IDS: dict[tuple[int, str], str] = {}


def network_id(client, name: str) -> str:
    """``ensure_network``, remembered per client (forget_network)."""
    known = _NETWORK_IDS.get((id(client), name))
    if known is None:
        known = _NETWORK_IDS[(id(client), name)] = ensure_network(client, name)
    return known


def forget_network(client, name: str) -> None:
    _NETWORK_IDS.pop((id(client), name), None)


def ensure_network(client, name: str) -> str:
    """The id of the function network NAME, created if it is missing.

    Agents sharing an engine may create it at once, and Docker's duplicate-name check is best
    effort: two networks of the name can result.  Every caller then picks the same one (the
    oldest, then the smallest id) and removes the others while they are still empty, so they
    agree without talking to each other; containers are created on the id, never the
    ambiguous name.  A network of the name that Gantry did not make (or whose inter-container
    traffic is on) is refused, never used."""
    found = _networks(client, name)
    if not any(is_function_network(n.attrs, name) for n in found):
        try:
            client.networks.create(**network_kwargs(name))
        except docker.errors.APIError as exc:
            if exc.status_code != 409:   # 409: another agent's create won the race
                raise
        found = _networks(client, name)
    foreign = [n for n in found if not is_function_network(n.attrs, name)]
    if foreign:
        raise RuntimeError(f"Docker network {name!r} ({foreign[0].short_id}) was not made by Gantry or lets "
                           "containers reach each other; remove it (`docker network rm`) so Gantry can make its own")
    if not found:
        raise RuntimeError(f"Docker network {name!r} could not be created")
    chosen, *extra = sorted(found, key=_age)
    for network in extra:
        try:
            network.remove()
            log.info("removed a duplicate function network", extra={"network": network.short_id})
        except docker.errors.APIError:
            pass                         # in use or gone: harmless, it isolates just the same
    return chosen.id


def _age(network) -> tuple[float, str]:
    """Oldest first, then by id: the same order for every agent that lists the same networks."""
    try:
        created = datetime.fromisoformat(network.attrs.get("Created", "")).timestamp()
    except ValueError:
        created = 0.0
    return created, network.id


def _networks(client, name: str) -> list:
    """Networks named exactly NAME (Docker's name filter matches substrings)."""
    return [n for n in client.networks.list(names=[name]) if n.name == name]


def start(client, node: str, host: str, spec: FunctionSpec, image: str, instance: str, version: int,
          epoch: int, drain_grace: float, *, secret_dir: str | None = None,
          isolation_level: str = isolation.SHARED, gpu_lease: str = "", gpu_total: int | None = None,
          precreated: tuple[str, int, str] | None = None, sandbox: str | None = None
          ) -> tuple[str, int, str]:
    """Create and start the instance's container on its function network (the tenant's own
    at ``container`` and ``node`` isolation, with the host firewall installed first), or reuse
    the one that exists; (id, port, the instance key its runtime accepts).

    PRECREATED: (id, port, key) of the container made ahead for this instance
    (worker/spares.py): it only needs ``docker start``, one request; SANDBOX: the running
    container whose network namespace (and published port) a new container joins instead
    of making one of its own.  A usual cold start is create, start, inspect (the port), on
    one kept-open connection (worker/dockerconn.py); a container of the name that exists
    already (a repeated start, one made before a restart) is looked up only when create
    says so."""
    name = network_name(spec, isolation_level)
    network_id(client, name)             # first: the firewall below covers the network's bridge
    if isolation.is_isolated_network(name):
        isolation.install(client)        # raises: an isolated instance never runs unprotected
    if precreated:
        container_id, port, key = precreated
        try:
            client.api.start(container_id)
            return container_id, port, key
        except docker.errors.APIError as exc:   # gone, or its sandbox gone
            log.info("pre-created container not used: %s", exc, extra={"instance": instance})
            force_remove(client, container_id)
            sandbox = None

    def arguments() -> dict:
        kwargs = container_kwargs(spec, image, instance, key=new_instance_key(), network=network_id(client, name),
                                  publish_host=host, gpu_lease=gpu_lease, gpu_total=gpu_total,
                                  labels={LABEL_NODE: node, LABEL_VERSION: str(version), LABEL_EPOCH: str(epoch)},
                                  env={"GANTRY_DRAIN_GRACE": f"{drain_grace:g}"}, secret_dir=secret_dir)
        return join_sandbox(kwargs, sandbox) if sandbox else kwargs

    kwargs = arguments()
    for _ in range(3):
        try:
            container_id = create(client, kwargs)
        except docker.errors.NotFound as exc:
            if sandbox:
                sandbox = None           # the sandbox is gone: a namespace of its own
            elif "network" in str(exc).lower():
                forget_network(client, name)   # removed behind our back: made again, firewalled again
                network_id(client, name)
                if isolation.is_isolated_network(name):
                    isolation.install(client)
            else:
                raise                    # the image
            kwargs = arguments()
            continue
        except docker.errors.APIError as exc:
            if exc.status_code != 409:   # 409: the name exists (a repeated start, a racing one)
                raise
            container = find(client, node, instance)
            if container is None:
                raise
            if (container.status in ("exited", "dead") or not instance_key(container)
                    or not (_on_network(container.attrs, name) or _sandbox_on(client, container.attrs, name))):
                # exited, made before instance keys (on the default bridge, answering anyone), or
                # on another network than its isolation asks for
                log.info("replacing %s container", container.status,
                         extra={"instance": instance, "container": container.short_id})
                force_remove(client, container)
                continue
            container_id = container.id
            if container.status != "running":
                client.api.start(container_id)
            return _read(client, container_id)
        client.api.start(container_id)
        return _read(client, container_id)
    raise RuntimeError(f"container of instance {instance} could not be created")


def create(client, kwargs: dict) -> str:
    """``docker create`` from container_kwargs; the new container's id.  The SDK's
    ``containers.create`` inspects what it made (a request the start does not need): its
    own conversion of the arguments is used with the low-level create alone."""
    from docker.models.containers import _create_container_args

    args = _create_container_args({**{k: v for k, v in kwargs.items() if k != "detach"},
                                   "version": client.api._version})
    return client.api.create_container(**args)["Id"]


def _read(client, container_id: str) -> tuple[str, int, str]:
    """(id, port, key) of a started container, from one inspect (two when it joined a sandbox)."""
    attrs = client.api.inspect_container(container_id)
    port = port_of(client, attrs)
    if port is None:
        raise RuntimeError(f"container {container_id[:12]} has no published port for the runtime")
    return attrs["Id"], port, instance_key_of(attrs)


def _on_network(attrs: dict, name: str) -> bool:
    return name in ((attrs.get("NetworkSettings") or {}).get("Networks") or {})


def sandbox_of(attrs: dict) -> str | None:
    """The id of the container whose network namespace this one joined, or None."""
    mode = (attrs.get("HostConfig") or {}).get("NetworkMode") or ""
    return mode[len("container:"):] if mode.startswith("container:") else None


def _sandbox_on(client, attrs: dict, network: str) -> bool:
    sandbox = sandbox_of(attrs)
    if sandbox is None:
        return False
    try:
        return _on_network(client.api.inspect_container(sandbox), network)
    except docker.errors.NotFound:
        return False


def port_of(client, attrs: dict) -> int | None:
    """The host port of the runtime: the container's own, or its sandbox's."""
    port = published_port_of(attrs)
    sandbox = sandbox_of(attrs)
    if port is None and sandbox:
        port = published_port_of(client.api.inspect_container(sandbox))
    return port


def join_sandbox(kwargs: dict, sandbox: str) -> dict:
    """Make container_kwargs join SANDBOX's network namespace: its network and published
    port are the sandbox's (Docker refuses ports and networks of a container that joins)."""
    kwargs.pop("network", None)
    kwargs.pop("ports", None)
    kwargs["network_mode"] = f"container:{sandbox}"
    return kwargs


def stop(client, node: str, instance: str, grace: float):
    """SIGTERM so the runtime drains in-flight work; SIGKILL if it has not exited GRACE (plus
    a margin for its own shutdown) seconds later.  The container, or None if there is none."""
    container = find(client, node, instance)
    if container is None:
        return None
    try:
        if container.status == "paused":
            container.unpause()
        if container.status in ("running", "paused", "restarting"):
            container.stop(timeout=max(1, round(grace + STOP_MARGIN)))
    except docker.errors.NotFound:
        return None
    return container


def pause(client, node: str, instance: str) -> tuple[str, str | None]:
    """Freeze the instance's container (`docker pause`, the cgroup freezer); idempotent.
    (status after, container id): "paused" when it is frozen now, else why not ("gone",
    "exited", ...: nothing running to freeze)."""
    return _switch(client, node, instance, "running", "pause", "paused")


def unpause(client, node: str, instance: str) -> tuple[str, str | None]:
    """Thaw the instance's container; idempotent.  (status after, container id): "running"
    when it runs now, else why not ("gone", "exited", ...)."""
    return _switch(client, node, instance, "paused", "unpause", "running")


def _switch(client, node: str, instance: str, when: str, action: str, after: str) -> tuple[str, str | None]:
    """Call ``container.<action>()`` if the container's status is ``when``."""
    container = find(client, node, instance)
    if container is None:
        return "gone", None
    try:
        if container.status == when:
            getattr(container, action)()
            return after, container.id
        return container.status, container.id
    except docker.errors.NotFound:
        return "gone", None
    except docker.errors.APIError as exc:
        if exc.status_code != 409:       # 409: its status changed in between: look again
            raise
    return _status(container)


def _status(container) -> tuple[str, str | None]:
    try:
        container.reload()
    except docker.errors.NotFound:
        return "gone", None
    return container.status, container.id


def force_remove(client, container_or_id) -> bool:
    """Remove the container at once, and the sandbox whose network namespace it joined (a
    sandbox serves one instance only, and goes with it)."""
    try:
        container = (client.containers.get(container_or_id) if isinstance(container_or_id, str)
                     else container_or_id)
    except docker.errors.NotFound:
        return False
    sandbox = sandbox_of(container.attrs)
    try:
        container.remove(force=True)
        removed = True
    except docker.errors.NotFound:
        removed = False
    if sandbox:
        try:
            client.api.remove_container(sandbox, force=True)
        except docker.errors.NotFound:
            pass
    return removed


def exited(client, container_id: str) -> Exited | None:
    """None while the container runs (or is paused); otherwise how it ended."""
    try:
        container = client.containers.get(container_id)
    except docker.errors.NotFound:
        return Exited("gone", None, False, "")
    state = container.attrs.get("State") or {}
    if container.status in ("running", "paused", "restarting", "created"):
        return None
    return Exited(container.status, state.get("ExitCode"), bool(state.get("OOMKilled")), last_line(container),
                  start_failure(container))


# What each structured start-failure event is called in an instance's reason.
_START_FAILURES = {StartFailure.IMPORT_FAILED: "handler import failed",
                   StartFailure.BAD_CONFIG: "bad runtime configuration",
                   StartFailure.SECRETS: "secrets not delivered"}


def start_failure(container, limit: int = 500) -> str:
    """The runtime's structured start-failure line among the container's last log lines
    (``{"event": "import_failed", "error": "main.py:3: KeyError: 'X'", ...}``) as
    "handler import failed: main.py:3: KeyError: 'X'"; "" when there is none."""
    for line in reversed(_tail(container, stdout=True, stderr=False, count=100)):
        if not line.startswith("{") or '"event"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        what = _START_FAILURES.get(record.get("event")) if isinstance(record, dict) else None
        if what and isinstance(record.get("error"), str):
            return f"{what}: {record['error']}"[:limit]
    return ""


def last_line(container, limit: int = 500) -> str:
    """The last line the container wrote on stderr (where a traceback ends with the exception
    and a crashing process says why), else on stdout."""
    lines = _tail(container, stdout=False, stderr=True) or _tail(container, stdout=True, stderr=False)
    return lines[-1][:limit] if lines else ""


def _tail(container, stdout: bool, stderr: bool, count: int = 20) -> list[str]:
    try:
        tail = container.logs(tail=count, stdout=stdout, stderr=stderr).decode(errors="replace")
    except docker.errors.APIError:
        return []
    return [line.strip() for line in tail.splitlines() if line.strip()]

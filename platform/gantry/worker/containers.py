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
from .containerspec import (LABEL_MANAGED, container_kwargs, instance_key, is_function_network, network_kwargs,
                            network_name, published_port)

log = logging.getLogger("gantry.worker")

LABEL_NODE = "gantry.node"
LABEL_INSTANCE = "gantry.instance"
LABEL_FUNCTION = "gantry.function"
LABEL_VERSION = "gantry.version"
LABEL_EPOCH = "gantry.epoch"
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
    found = client.containers.list(all=True, filters=node_filter(node, **{LABEL_INSTANCE: instance}),
                                   ignore_removed=True)
    return found[0] if found else None


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
          isolation_level: str = isolation.SHARED, gpu_lease: str = "", gpu_total: int | None = None
          ) -> tuple[str, int, str]:
    """Create and start the instance's container on its function network (the tenant's own
    at ``container`` and ``node`` isolation, with the host firewall installed first), or reuse
    the one that exists; (id, port, the instance key its runtime accepts)."""
    name = network_name(spec, isolation_level)
    network = ensure_network(client, name)
    if isolation.is_isolated_network(name):
        isolation.install(client)        # raises: an isolated instance never runs unprotected
    container = find(client, node, instance)
    if container is not None and (container.status in ("exited", "dead") or not instance_key(container)
                                  or name not in ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {})):
        # exited, made before instance keys (on the default bridge, answering anyone), or on
        # another network than its isolation asks for
        log.info("replacing %s container", container.status, extra={"instance": instance, "container": container.short_id})
        container.remove(force=True)
        container = None
    if container is None:
        kwargs = container_kwargs(spec, image, instance, key=new_instance_key(), network=network, publish_host=host,
                                  gpu_lease=gpu_lease, gpu_total=gpu_total,
                                  labels={LABEL_NODE: node, LABEL_VERSION: str(version), LABEL_EPOCH: str(epoch)},
                                  env={"GANTRY_DRAIN_GRACE": f"{drain_grace:g}"}, secret_dir=secret_dir)
        kwargs.pop("detach", None)
        try:
            container = client.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:   # 409: the name exists, a create that raced ours
                raise
            container = find(client, node, instance)
            if container is None:
                raise
    if container.status != "running":
        container.start()
    port = published_port(container)
    if port is None:
        raise RuntimeError(f"container {container.short_id} has no published port for the runtime")
    return container.id, port, instance_key(container)


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
    try:
        container = (client.containers.get(container_or_id) if isinstance(container_or_id, str)
                     else container_or_id)
        container.remove(force=True)
        return True
    except docker.errors.NotFound:
        return False


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

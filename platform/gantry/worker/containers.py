"""Blocking Docker calls of the worker agent (run in its thread pool, never on the loop).

Every container the agent creates carries gantry.managed=1 and gantry.node=NODE, so a node
only ever touches its own containers even when several agents share one engine.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import docker.errors

from ..manifest import FunctionSpec
from .containerspec import LABEL_MANAGED, container_kwargs, published_port

log = logging.getLogger("gantry.worker")

LABEL_NODE = "gantry.node"
LABEL_INSTANCE = "gantry.instance"
LABEL_FUNCTION = "gantry.function"
LABEL_VERSION = "gantry.version"
LABEL_EPOCH = "gantry.epoch"
STOP_MARGIN = 2.0   # seconds past the drain grace before Docker sends SIGKILL: the runtime's own exit


@dataclass
class Exited:
    """Why a container is not running: its exit code and the last line it logged."""
    status: str
    exit_code: int | None
    oom: bool
    last_line: str

    def reason(self) -> str:
        if self.status == "gone":
            return "container disappeared"
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


def start(client, node: str, host: str, spec: FunctionSpec, image: str, instance: str, version: int,
          epoch: int, drain_grace: float) -> tuple[str, int]:
    """Create and start the instance's container, or reuse the one that exists; (id, port)."""
    container = find(client, node, instance)
    if container is not None and container.status in ("exited", "dead"):
        log.info("replacing exited container", extra={"instance": instance, "container": container.short_id})
        container.remove(force=True)
        container = None
    if container is None:
        kwargs = container_kwargs(spec, image, instance, publish_host=host,
                                  labels={LABEL_NODE: node, LABEL_VERSION: str(version), LABEL_EPOCH: str(epoch)},
                                  env={"GANTRY_DRAIN_GRACE": f"{drain_grace:g}"})
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
    return container.id, port


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
    return Exited(container.status, state.get("ExitCode"), bool(state.get("OOMKilled")), last_line(container))


def last_line(container, limit: int = 500) -> str:
    try:
        tail = container.logs(tail=20).decode(errors="replace")
    except docker.errors.APIError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""

"""How a function instance is run on Docker: the hardened defaults for untrusted code.

Non-root, read-only root with a small tmpfs /tmp, every capability dropped,
no-new-privileges, the default seccomp profile, pids/memory/CPU limits with swap equal to
memory, never privileged, no host mounts and never the Docker socket.  An init (Docker's
``--init``: tini, the engine's docker-init) is PID 1 and reaps orphaned processes, which a
runtime as PID 1 never did: zombies of a fork bomb kept every pid taken for good (the
runtime reaps its own children under pressure, gantry_runtime.pids).  The runtime port is
published on the host's loopback only: the gateway on the same node reaches it there, and
nothing else can.
"""
from __future__ import annotations

from ..manifest import FunctionSpec

RUNTIME_PORT = "8080/tcp"
FUNCTION_USER = "10001:10001"
LABEL_MANAGED = "gantry.managed"
PIDS_LIMIT = 256
TMPFS_SIZE = "64m"


def instance_labels(function: str, instance: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED: "1", "gantry.function": function, "gantry.instance": instance, **extra}


def container_kwargs(spec: FunctionSpec, image: str, instance: str, *, labels: dict[str, str] | None = None,
                     env: dict[str, str] | None = None, network: str | None = None,
                     publish_host: str = "127.0.0.1") -> dict:
    """Keyword arguments for ``client.containers.create`` (or ``run``) of one instance."""
    memory = spec.resources.memory
    environment = {
        **spec.env,
        "GANTRY_FUNCTION": spec.name,
        "GANTRY_HANDLER": spec.handler,
        "GANTRY_CONCURRENCY": str(spec.scaling.concurrency),
        "GANTRY_TIMEOUT": f"{spec.limits.timeout:g}",
        # GPUs are given by UUID when the scheduler assigns some; otherwise none at all.
        "NVIDIA_VISIBLE_DEVICES": "void",
        **(env or {}),
    }
    kwargs = dict(
        image=image,
        name=f"gantry-{spec.name}-{instance}",
        detach=True,
        labels={**instance_labels(spec.name, instance), **(labels or {})},
        environment=environment,
        user=FUNCTION_USER,
        read_only=True,
        tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={TMPFS_SIZE}"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        privileged=False,
        init=True,
        pids_limit=PIDS_LIMIT,
        mem_limit=memory,
        memswap_limit=memory,
        nano_cpus=int(spec.resources.cpu * 1e9),
        ports={RUNTIME_PORT: (publish_host, None)},
        log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
    )
    if network:
        kwargs["network"] = network
    return kwargs


def published_port(container) -> int | None:
    """The loopback port Docker chose for the runtime, once the container is started."""
    container.reload()
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(RUNTIME_PORT) or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None

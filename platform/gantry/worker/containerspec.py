"""How a function instance is run on Docker: the hardened defaults for untrusted code.

Non-root, read-only root with a small tmpfs /tmp, every capability dropped,
no-new-privileges, the default seccomp profile, pids/memory/CPU limits with swap equal to
memory, never privileged, no host mounts (but the instance's own secret files, read-only: worker.secretfiles) and
never the Docker socket.  An init (Docker's
``--init``: tini, the engine's docker-init) is PID 1 and reaps orphaned processes, which a
runtime as PID 1 never did: zombies of a fork bomb kept every pid taken for good (the
runtime reaps its own children under pressure, gantry_runtime.pids).  The runtime port is
published on the node's address for instances (loopback by default): the gateway reaches it
there.

Isolation between instances: every instance joins a bridge network of Gantry's own (the
shared one, or its tenant's: worker/isolation.py) with
inter-container traffic off (``network_kwargs``), so one function cannot open a connection to
another's container; and its runtime answers /invoke only to requests that carry the
instance's own key (``wire.INSTANCE_KEY``), which the worker makes at start and gives the
gateway through the instance record, so a connection that gets through anyway (the published
port when it is on a non-loopback address, a misconfigured engine) still cannot invoke it.
"""
from __future__ import annotations

import os

from gantry_runtime.coord import COORD_TOKEN_ENV, COORD_URL_ENV, coord_token
from gantry_runtime.wire import INSTANCE_KEY_ENV

from docker.types import DeviceRequest, Mount

from ..manifest import MAX_BODY, MODELS_MOUNT, FunctionSpec
from ..scheduler.gpulease import uuids as lease_uuids
from .secretfiles import SECRET_VARS_ENV, SECRETS_MOUNT
from . import isolation as isolation_
from . import vllmengine

RUNTIME_PORT = "8080/tcp"
FUNCTION_USER = "10001:10001"
LABEL_MANAGED = "gantry.managed"
PIDS_LIMIT = 256
TMPFS_SIZE = "64m"
LABEL_NETWORK = "gantry.network"
# The instance's GPU lease, "UUID=BYTES,..." (scheduler/gpulease.py): a restarted worker reads
# its containers' leases back from it.
LABEL_GPUS = "gantry.gpus"
LABEL_RUNTIME = "gantry.runtime"     # which probes the worker uses (vllmengine.probes) after a restart
LABEL_FLAVOUR = "gantry.engine"      # a vllm instance's engine flavour, cpu or gpu (its warm pool)
FUNCTION_NETWORK = "gantry-fn"
# Docker drops traffic between two containers of the bridge (iptables FORWARD -i br -o br
# DROP); traffic out of the bridge (outbound, NATed) is as on the default bridge.
NETWORK_OPTIONS = {"com.docker.network.bridge.enable_icc": "false",
                   "com.docker.network.bridge.enable_ip_masquerade": "true"}


def network_name(spec: FunctionSpec, isolation: str = isolation_.SHARED) -> str:
    """The Docker network the function's instances join: the shared one, or at ``container``
    and ``node`` isolation the tenant's own (worker/isolation.py)."""
    return isolation_.network_for(isolation, spec.tenant, FUNCTION_NETWORK)


def network_kwargs(name: str) -> dict:
    """Keyword arguments for ``client.networks.create`` of a function network; a tenant's
    network is labelled isolated, which is what puts its bridge under the host firewall."""
    labels = {LABEL_MANAGED: "1", LABEL_NETWORK: name}
    if isolation_.is_isolated_network(name):
        labels[isolation_.LABEL_ISOLATION] = isolation_.CONTAINER
    return dict(name=name, driver="bridge", options=dict(NETWORK_OPTIONS), internal=False, enable_ipv6=False,
                check_duplicate=True, labels=labels)


def is_function_network(attrs: dict, name: str) -> bool:
    """Whether a network (its ``attrs``) is a function network Gantry made under NAME, with
    inter-container traffic off, and labelled isolated exactly when NAME is a tenant's (the
    label is what puts its bridge under the host firewall); a network of that name that is
    not must never be used."""
    labels = attrs.get("Labels") or {}
    options = attrs.get("Options") or {}
    isolated = isolation_.CONTAINER if isolation_.is_isolated_network(name) else None
    return (attrs.get("Name") == name and labels.get(LABEL_MANAGED) == "1" and labels.get(LABEL_NETWORK) == name
            and labels.get(isolation_.LABEL_ISOLATION) == isolated
            and attrs.get("Driver") == "bridge"
            and all(options.get(k) == v for k, v in NETWORK_OPTIONS.items()))


def instance_labels(function: str, instance: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED: "1", "gantry.function": function, "gantry.instance": instance, **extra}


def container_kwargs(spec: FunctionSpec, image: str, instance: str, *, key: str, network: str,
                     labels: dict[str, str] | None = None, env: dict[str, str] | None = None,
                     publish_host: str = "127.0.0.1", secret_dir: str | None = None,
                     gpu_lease: str = "", gpu_total: int | None = None, models_dir: str | None = None) -> dict:
    """Keyword arguments for ``client.containers.create`` (or ``run``) of one instance.  KEY
    is the instance's secret (never empty), NETWORK the id or name of its function network
    (``containers.ensure_network``), SECRET_DIR the instance's secret files on the node
    (worker.secretfiles), mounted read-only at /run/secrets when the spec names secrets.
    GPU_LEASE: the GPUs the scheduler leased it ("UUID=BYTES,..."), given by UUID and only
    those: Docker does not allocate GPUs (a count of 1 twice gives both containers GPU 0);
    GPU_TOTAL: the memory of the leased GPU (a share's engine uses that fraction of it).
    A vllm function's instance runs the engine (vllmengine) under the same rules but three
    relaxations it cannot run without: a bigger /tmp (its caches), more pids (its processes
    and threads) and a bigger /dev/shm; a node model (MODELS_DIR, default GANTRY_MODELS_DIR)
    is mounted read-only."""
    gpu_ids = lease_uuids(gpu_lease)
    if not key:
        raise ValueError("an instance needs its key: the runtime would answer anyone")
    memory = spec.resources.memory
    environment = {
        **spec.env,
        "GANTRY_FUNCTION": spec.name,
        "GANTRY_TENANT": spec.tenant,
        "GANTRY_HANDLER": spec.handler,
        "GANTRY_CONCURRENCY": str(spec.scaling.concurrency),
        "GANTRY_TIMEOUT": f"{spec.limits.timeout:g}",
        # The gateway enforces the body limit; the runtime must never refuse what it let
        # through, and the worker cannot know the gateways' GANTRY_MAX_BODY (at most MAX_BODY).
        "GANTRY_MAX_BODY": str(spec.limits.max_body or MAX_BODY),
        **(env or {}),
        # GPUs are given by UUID when the scheduler leased some; otherwise none at all.
        "NVIDIA_VISIBLE_DEVICES": ",".join(gpu_ids) if gpu_ids else "void",
        # Last, so nothing overrides it.  Visible in `docker inspect` (root on the node, who
        # holds the Docker socket anyway) and to the function's own code (its own key only).
        INSTANCE_KEY_ENV: key,
        # ctx.coord's credential (docs/coordination.md): an HMAC of the instance id under its
        # key, good for the gateway's /v1/coord/ only and only while the instance runs; and
        # where the container reaches the gateway, when the worker was told (GANTRY_COORD_URL)
        COORD_TOKEN_ENV: coord_token(instance, key),
    }
    coord_url = os.environ.get(COORD_URL_ENV, "").strip()
    if coord_url:
        environment[COORD_URL_ENV] = coord_url
    mounts = []
    if spec.secrets:
        if not secret_dir:
            raise ValueError(f"function {spec.qualified!r} names secrets: its instance needs their files")
        # The variables' names only: the values are files on a tmpfs, never in Config.Env.
        environment[SECRET_VARS_ENV] = ",".join(sorted(spec.secrets))
        mounts.append(Mount(target=SECRETS_MOUNT, source=secret_dir, type="bind", read_only=True))
    kwargs = dict(
        image=image,
        name=f"gantry-{spec.qualified}-{instance}",
        detach=True,
        labels={**instance_labels(spec.qualified, instance), "gantry.tenant": spec.tenant,
                LABEL_RUNTIME: spec.runtime, **(labels or {}), **({LABEL_GPUS: gpu_lease} if gpu_ids else {})},
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
        network=network,
        ports={RUNTIME_PORT: (publish_host, None)},
        log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
        mounts=mounts,
        **({"device_requests": [DeviceRequest(device_ids=gpu_ids, capabilities=[["gpu"]])]} if gpu_ids else {}),
    )
    if spec.runtime == vllmengine.RUNTIME:
        # The key goes in last again: the engine's own name for it, VLLM_API_KEY.
        environment.update(vllmengine.environment(spec, key))
        folder = vllmengine.models_source(spec, models_dir)
        if folder is not None:
            mounts.append(Mount(target=MODELS_MOUNT, source=os.path.abspath(folder), type="bind", read_only=True))
        kwargs["labels"][LABEL_FLAVOUR] = vllmengine.flavour(spec)
        kwargs.update(command=vllmengine.command(spec, gpu_total), pids_limit=vllmengine.PIDS_LIMIT,
                      shm_size=vllmengine.SHM_SIZE,
                      tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={vllmengine.TMPFS_SIZE}"})
    return kwargs


def instance_key(container) -> str:
    """The key a container's runtime was started with ("" if none): a container that exists
    already (a repeated start) keeps the key it has."""
    return instance_key_of(container.attrs)


def instance_key_of(attrs: dict) -> str:
    """instance_key from a container's inspect data."""
    prefix = f"{INSTANCE_KEY_ENV}="
    for item in (attrs.get("Config") or {}).get("Env") or []:
        if item.startswith(prefix):
            return item[len(prefix):]
    return ""


def published_port(container) -> int | None:
    """The loopback port Docker chose for the runtime, once the container is started."""
    container.reload()
    return published_port_of(container.attrs)


def published_port_of(attrs: dict) -> int | None:
    """published_port from a started container's inspect data (None: none published)."""
    bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(RUNTIME_PORT) or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None

"""Tenant isolation on a node: which network an instance joins, and the host firewall that
keeps an isolated tenant's containers off the host (docs/tenants.md "Isolation levels").

``shared``: the common function network ``gantry-fn`` (containerspec.FUNCTION_NETWORK), as
before tenants: inter-container traffic off, but the host (Redis, the gateway, the worker,
anything listening on a host address) is reachable through the bridge.

``container`` and ``node``: a bridge network of the tenant's own, ``gantry-t-<tenant>``, made
like gantry-fn (inter-container traffic off) and labelled ``gantry.isolation=container``.
What keeps its containers from everything but the outside world:

- another tenant's containers, the shared network's: Docker's own isolation chains
  (DOCKER-ISOLATION-STAGE-1/2) drop every packet from one bridge to another, including one
  DNATed to a container of another bridge through a port published on a host address;
- the tenant's other instances: inter-container traffic off (FORWARD -i br -o br DROP);
- the host itself, on every one of its addresses (the bridge gateway, the other bridges',
  the host's own): the chain GANTRY-ISOLATION, jumped to first from INPUT, drops every packet
  that comes in from an isolated bridge except replies to connections the host opened (the
  gateway's and health checker's to the published port) and, when the worker has
  GANTRY_COORD_URL, the coordination endpoint's exact address and TCP port.

The chain is written whole from what Docker says the isolated networks are (``rules``, pure)
with ``iptables-restore --noflush``, which replaces that one chain atomically; agents sharing
an engine (and so the host's firewall) serialise on a lock file, so a writer that listed the
networks before another agent made one cannot drop that one's rules.  It is written again at
worker start, at each isolated start (``ensure``) and at each orphan sweep, so rules lost to
a firewall reload come back within seconds, and an isolated instance is never started while
they cannot be installed (the start fails with the cause).  IPv4 only: Gantry's networks are
made without IPv6.
"""
from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
import subprocess
from contextlib import contextmanager
from urllib.parse import urlsplit

from ..manifest import DEFAULT_TENANT
from ..tenants.model import Isolation

log = logging.getLogger("gantry.worker")

SHARED, CONTAINER, NODE = Isolation.SHARED, Isolation.CONTAINER, Isolation.NODE
LEVELS = tuple(Isolation)
TENANT_NETWORK_PREFIX = "gantry-t-"
LABEL_ISOLATION = "gantry.isolation"
CHAIN = "GANTRY-ISOLATION"
LOCK_FILE = "/run/gantry-isolation.lock"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


class IsolationError(RuntimeError):
    """The firewall an isolated instance needs cannot be installed: it must not start."""


# --- pure decisions ----------------------------------------------------------------------------

def level(value: object, tenant: str) -> str:
    """The isolation a start command asks for.  Absent (a command of a scheduler older than
    tenants): ``shared`` for the default tenant, as it always was; ``container`` for any
    other, never less isolation than the tenant was promised."""
    if value in (None, ""):
        return SHARED if tenant == DEFAULT_TENANT else CONTAINER
    if value not in LEVELS:
        raise ValueError(f"isolation: expected one of {', '.join(LEVELS)}, got {value!r}")
    return str(value)


def network_for(isolation: str, tenant: str, shared_network: str) -> str:
    """The Docker network of an instance of TENANT at ISOLATION."""
    return shared_network if isolation == SHARED else f"{TENANT_NETWORK_PREFIX}{tenant}"


def is_isolated_network(name: str) -> bool:
    return name.startswith(TENANT_NETWORK_PREFIX)


def bridge_interface(attrs: dict) -> str:
    """The host interface of a bridge network (Docker names it br-<first 12 of the id> unless
    the network sets its own name)."""
    return (attrs.get("Options") or {}).get(BRIDGE_NAME_OPTION) or f"br-{attrs['Id'][:12]}"


def coord_endpoint(url: str) -> tuple[str, int] | None:
    """(host, TCP port) of GANTRY_COORD_URL, the one host service isolated containers may
    reach (the gateway's /v1/coord/, behind the instance's own token); None when unset."""
    url = (url or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"GANTRY_COORD_URL: expected http://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def rules(interfaces: list[str], allow: list[tuple[str, int]] = ()) -> list[str]:
    """The GANTRY-ISOLATION chain, as ``iptables -A`` arguments, for the isolated bridges
    INTERFACES: per bridge, replies to the host's own connections return, then the allowed
    (IPv4 address, TCP port)s, then everything else from that bridge to the host is dropped.
    Traffic from any other interface falls through (the chain ends by returning)."""
    out = []
    for name in sorted(set(interfaces)):
        out.append(f"-A {CHAIN} -i {name} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
        for host, port in allow:
            out.append(f"-A {CHAIN} -i {name} -d {host}/32 -p tcp -m tcp --dport {port} -j RETURN")
        out.append(f"-A {CHAIN} -i {name} -j DROP")
    out.append(f"-A {CHAIN} -j RETURN")
    return out


def restore_input(interfaces: list[str], allow: list[tuple[str, int]] = ()) -> str:
    """Input for ``iptables-restore --noflush``: declaring the chain flushes it (only it), and
    the whole table is committed at once, so no packet ever sees half a chain."""
    return "\n".join(["*filter", f":{CHAIN} - [0:0]", *rules(interfaces, allow), "COMMIT", ""])


# --- the firewall ------------------------------------------------------------------------------

def _iptables(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise IsolationError(f"{args[0]} is not installed: isolated tenants need iptables on the node") from exc
    if check and done.returncode != 0:
        raise IsolationError(f"{' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[:300]}"
                             " (the worker must run as root on the Docker engine's host)")
    return done


@contextmanager
def _locked():
    """One writer of the chain at a time among the agents of this host."""
    with open(LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _resolve(host: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return socket.gethostbyname(host)


def isolated_networks(client) -> list:
    """Every isolated tenant network on the engine (Gantry's label, whatever node made it)."""
    return client.networks.list(filters={"label": ["gantry.managed=1", f"{LABEL_ISOLATION}={CONTAINER}"]})


def install(client, coord_url: str | None = None) -> list[str]:
    """Write GANTRY-ISOLATION for every isolated network the engine has and make sure INPUT
    jumps to it first; the bridge interfaces covered.  Idempotent.  Raises IsolationError."""
    endpoint = coord_endpoint(os.environ.get("GANTRY_COORD_URL", "") if coord_url is None else coord_url)
    allow = [(_resolve(endpoint[0]), endpoint[1])] if endpoint else []
    with _locked():
        # listed under the lock: a network another agent made before taking it is included
        interfaces = [bridge_interface(n.attrs) for n in isolated_networks(client)]
        _iptables("iptables-restore", "-w", "--noflush", stdin=restore_input(interfaces, allow))
        if _iptables("iptables", "-w", "-C", "INPUT", "-j", CHAIN, check=False).returncode != 0:
            _iptables("iptables", "-w", "-I", "INPUT", "1", "-j", CHAIN)
    return interfaces


def installed_rules() -> list[str]:
    """The chain as the kernel has it now (``iptables -S``), for checks and tests."""
    return _iptables("iptables", "-w", "-S", CHAIN).stdout.splitlines()


def refresh(client) -> None:
    """``install`` when there is any isolated network, logging instead of raising: for the
    worker's start and sweeps (an isolated start itself raises)."""
    try:
        if isolated_networks(client):
            install(client)
    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
        log.error("tenant isolation rules could not be installed: %s", exc)

"""Tenant isolation levels inside real containers (docs/tenants.md "Isolation levels").

Instances are started by the worker's own code (``containers.start`` with the isolation level
a start command carries) on the real engine, and the host firewall is the real one (root,
iptables).  A netprobe instance of tenant A at ``container`` isolation tries, from inside,
every way to the host and to other tenants; every one must fail, while a routed address
outside the host (a network namespace behind a veth pair, standing in for the internet) still
answers.  A ``shared`` prober makes the same attempts and reaches the host: the probe can see
a hole, and ``shared`` is today's behaviour (logical separation only)."""
from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
import uuid

import docker.errors
import pytest

from gantry.build import build_function
from gantry.manifest import load_manifest
from gantry.worker import containers, isolation
from gantry.worker.containerspec import FUNCTION_NETWORK, network_name

from .conftest import FUNCTIONS, wait_ready
from .test_isolation import BLOCKED, NETPROBE, _post

pytestmark = pytest.mark.docker
KINDS = f"{FUNCTIONS}/kinds"


def _host_addresses() -> list[str]:
    """Every IPv4 address of the host but loopback (the bridges' gateways among them)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    found = {line.split()[3].split("/")[0] for line in out.splitlines()}
    return sorted(a for a in found if not a.startswith("127."))


class _Listener:
    """A TCP listener on every host address that answers anything with an HTTP 200: a stand-in
    for a host service (the gateway, the worker, a Docker API on TCP)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                try:
                    conn.settimeout(1)
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listeners():
    made = {"gateway": _Listener(), "worker": _Listener()}
    try:
        made["docker-tcp-2375"] = _Listener(2375)     # Docker here listens on a unix socket only
    except OSError:
        pass                                          # something else has it: probed anyway
    yield made
    for listener in made.values():
        listener.close()


@pytest.fixture(scope="module")
def exposed_redis():
    """A real Redis server listening on every host address, the worst case a node can have
    (the suite's own Redis listens on loopback only, which a bridge never reaches anyway):
    what the probes try.  Its port."""
    import redis as redis_lib
    from gantry.up import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "0.0.0.0", "--protected-mode", "no",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis_lib.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis_lib.ConnectionError:
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
    yield port
    client.close()
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def outside():
    """A routed address that is not the host's: a network namespace behind a veth pair with a
    tiny HTTP server in it (what "the internet" is to a container here).  (address, port)."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"gtiso-{tag}", f"gti{tag}h", f"gti{tag}n"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, ns_ip, port = f"10.213.{octet}.1", f"10.213.{octet}.2", 8099

    def sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=10)

    server = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", host_ip)
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", str(port),
                                   "--bind", ns_ip], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                               f"import socket; socket.create_connection(({ns_ip!r}, {port}), 1)"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield ns_ip, port
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)    # takes its peer too
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def tenants(docker_client):
    """start(directory, tenant, level, publish="127.0.0.1", handler=None) -> (container, url,
    key) as the worker starts an instance; two fresh tenant ids; everything removed at the end
    (containers, the tenants' networks, and their bridges' rules: the chain is rewritten)."""
    node_id = f"tenantiso-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:6]
    ids = (f"isoa-{tag}", f"isob-{tag}")

    def start(directory: str, image: str, tenant: str, level: str, publish: str = "127.0.0.1",
              handler: str | None = None):
        spec = dataclasses.replace(load_manifest(directory), tenant=tenant, **({"handler": handler} if handler else {}))
        container_id, _, key = containers.start(docker_client, node_id, publish, spec, image,
                                                uuid.uuid4().hex[:8], 1, 1, 1.0, isolation_level=level)
        container = docker_client.containers.get(container_id)
        return container, wait_ready(container), key

    start.ids = ids
    yield start
    for container in containers.node_containers(docker_client, node_id):
        containers.force_remove(docker_client, container)
    bridges = []
    for tenant in ids:
        name = f"{isolation.TENANT_NETWORK_PREFIX}{tenant}"
        for network in docker_client.networks.list(names=[name]):
            if network.name == name:
                bridges.append(isolation.bridge_interface(network.attrs))
                try:
                    network.remove()
                except docker.errors.NotFound:
                    pass
    isolation.install(docker_client)          # the chain again, without the removed bridges
    left = isolation.installed_rules()
    assert not [r for r in left for b in bridges if f"-i {b} " in r], left


@pytest.fixture(scope="module")
def netprobe_image(docker_client) -> str:
    return build_function(docker_client, NETPROBE).image


def _ip(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _port(container) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def _probe(url: str, key: str, targets: list[dict]) -> dict[str, dict]:
    status, _, body = _post(url, {"targets": targets, "timeout": 1.0}, key, **{"X-Gantry-Timeout": "28"})
    assert status == 200, body
    return json.loads(body)["attempts"]


def test_container_isolation_blocks_the_host_and_other_tenants(docker_client, netprobe_image, kinds_image,
                                                                tenants, listeners, outside, exposed_redis):
    a, b = tenants.ids
    net_a = network_name(dataclasses.replace(load_manifest(NETPROBE), tenant=a), isolation.CONTAINER)
    assert net_a == f"gantry-t-{a}"
    prober, prober_url, prober_key = tenants(NETPROBE, netprobe_image, a, isolation.CONTAINER)
    # another instance of A, and one of B, both published on every host address
    sibling, _, _ = tenants(KINDS, kinds_image, a, isolation.CONTAINER, publish="0.0.0.0")
    other, other_url, other_key = tenants(KINDS, kinds_image, b, isolation.CONTAINER, publish="0.0.0.0")
    prober.reload()
    assert set(prober.attrs["NetworkSettings"]["Networks"]) == {net_a}
    assert set(other.attrs["NetworkSettings"]["Networks"]) == {f"gantry-t-{b}"}

    # the rules are in place for A's and B's bridges
    bridges = {t: isolation.bridge_interface(docker_client.networks.get(f"gantry-t-{t}").attrs) for t in (a, b)}
    chain = isolation.installed_rules()
    for bridge in bridges.values():
        assert f"-A GANTRY-ISOLATION -i {bridge} -j DROP" in chain, chain

    redis_port = exposed_redis
    addresses = _host_addresses()
    own_gateway = prober.attrs["NetworkSettings"]["Networks"][net_a]["Gateway"]
    assert own_gateway in addresses and len(addresses) >= 3, addresses   # the bridge gateways, eth0
    services = {"redis": redis_port, **{name: listener.port for name, listener in listeners.items()}}
    services.setdefault("docker-tcp-2375", 2375)
    targets = [{"name": f"{what} {addr}:{port}", "host": addr, "port": port}
               for addr in addresses for what, port in services.items()]
    targets += [{"name": f"tenant B {other_ip}:8080", "host": other_ip, "port": 8080}
                for other_ip in [_ip(other, f"gantry-t-{b}")]]
    targets += [{"name": f"tenant B published {addr}:{_port(other)}", "host": addr, "port": _port(other)}
                for addr in addresses]
    targets += [{"name": f"tenant A sibling {_ip(sibling, net_a)}:8080", "host": _ip(sibling, net_a), "port": 8080}]
    targets += [{"name": f"tenant A sibling published {addr}:{_port(sibling)}", "host": addr, "port": _port(sibling)}
                for addr in addresses]
    targets.append({"name": "outside", "host": outside[0], "port": outside[1]})

    accepted_before = {name: listener.accepted for name, listener in listeners.items()}
    attempts = _probe(prober_url, prober_key, targets)
    assert len(attempts) == len(targets)
    assert attempts["outside"]["result"] == "connected", attempts["outside"]      # the allowed world
    blocked = {name: a_["result"] for name, a_ in attempts.items() if name != "outside"}
    assert set(blocked.values()) <= BLOCKED, {n: r for n, r in blocked.items() if r not in BLOCKED}
    assert {name: listener.accepted for name, listener in listeners.items()} == accepted_before

    # the gateway's path to both tenants still works (loopback and published on host addresses)
    assert _post(other_url, {"a": 1}, other_key)[0] == 200

    # a shared prober, the same attempts at the host: it gets through (today's behaviour, and
    # proof that the probe sees an open way when there is one)
    shared, shared_url, shared_key = tenants(NETPROBE, netprobe_image, "default", isolation.SHARED)
    shared.reload()
    assert set(shared.attrs["NetworkSettings"]["Networks"]) == {FUNCTION_NETWORK}
    gw = shared.attrs["NetworkSettings"]["Networks"][FUNCTION_NETWORK]["Gateway"]
    open_ = _probe(shared_url, shared_key, [
        {"name": "redis", "host": gw, "port": redis_port},
        {"name": "gateway", "host": gw, "port": listeners["gateway"].port},
        {"name": "tenant B", "host": _ip(other, f"gantry-t-{b}"), "port": 8080}])
    assert open_["redis"]["result"] == "connected" and open_["gateway"]["result"] == "connected", open_
    assert open_["tenant B"]["result"] in BLOCKED, open_           # other bridges stay apart even so


def test_rules_are_idempotent_and_put_back_when_lost(docker_client, netprobe_image, tenants):
    a, _ = tenants.ids
    tenants(NETPROBE, netprobe_image, a, isolation.CONTAINER)
    bridge = isolation.bridge_interface(docker_client.networks.get(f"gantry-t-{a}").attrs)
    first = isolation.installed_rules()
    isolation.install(docker_client)
    isolation.install(docker_client)
    assert isolation.installed_rules() == first
    jumps = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True, check=True).stdout
    assert jumps.count(f"-j {isolation.CHAIN}") == 1, jumps
    assert jumps.splitlines()[1] == f"-A INPUT -j {isolation.CHAIN}", jumps     # first in INPUT

    subprocess.run(["iptables", "-w", "-F", isolation.CHAIN], check=True)     # a firewall reload
    assert not any(bridge in r for r in isolation.installed_rules())
    isolation.refresh(docker_client)                                         # the worker's sweep
    assert f"-A GANTRY-ISOLATION -i {bridge} -j DROP" in isolation.installed_rules()


def test_the_coordination_endpoint_is_the_one_host_service_allowed(docker_client, netprobe_image, tenants,
                                                                   listeners, exposed_redis):
    """With GANTRY_COORD_URL the gateway's address and port (only) stay reachable."""
    a, _ = tenants.ids
    prober, url, key = tenants(NETPROBE, netprobe_image, a, isolation.CONTAINER)
    gw = prober.attrs["NetworkSettings"]["Networks"][f"gantry-t-{a}"]["Gateway"]
    coord = listeners["gateway"].port
    try:
        isolation.install(docker_client, coord_url=f"http://{gw}:{coord}")
        attempts = _probe(url, key, [
            {"name": "coord", "host": gw, "port": coord},
            {"name": "worker", "host": gw, "port": listeners["worker"].port},
            {"name": "redis", "host": gw, "port": exposed_redis}])
    finally:
        isolation.install(docker_client, coord_url="")
    assert attempts["coord"]["result"] == "connected", attempts
    assert attempts["worker"]["result"] in BLOCKED and attempts["redis"]["result"] in BLOCKED, attempts

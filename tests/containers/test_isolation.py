"""Instances cannot reach each other: they run on Gantry's own bridge network with
inter-container traffic off, and a runtime answers /invoke only with its instance key.
Containers are started by the worker's own code (``containers.start``) on the real engine;
a function inside one tries to reach another (tests/containers/functions/netprobe)."""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import threading
import urllib.error
import urllib.request
import uuid

import docker.errors
import pytest

from gantry.build import build_function
from gantry.manifest import load_manifest
from gantry.worker import containers
from gantry.worker.containerspec import (FUNCTION_NETWORK, NETWORK_OPTIONS, container_kwargs, network_kwargs,
                                         network_name)
from gantry_runtime.wire import INSTANCE_KEY, INSTANCE_KEY_ENV, ErrorCode, parse_error

from .conftest import FUNCTIONS, wait_ready

pytestmark = pytest.mark.docker
KINDS = os.path.join(FUNCTIONS, "kinds")
NETPROBE = os.path.join(FUNCTIONS, "netprobe")
BLOCKED = {"refused", "timeout", "unreachable"}


@pytest.fixture(scope="module")
def netprobe_image(docker_client) -> str:
    return build_function(docker_client, NETPROBE).image


@pytest.fixture
def node(docker_client):
    """start(image, directory) -> (container, url, key), as the worker starts an instance, on a
    node of this test's own; every container of the node is removed at the end."""
    node_id = f"isolation-{uuid.uuid4().hex[:8]}"

    def start(image: str, directory: str, handler: str | None = None):
        spec = load_manifest(directory)
        if handler:
            spec = dataclasses.replace(spec, handler=handler)
        instance = uuid.uuid4().hex[:8]
        container_id, port, key = containers.start(docker_client, node_id, "127.0.0.1", spec, image, instance,
                                                   1, 1, 1.0)
        container = docker_client.containers.get(container_id)
        return container, wait_ready(container), key

    yield start
    for container in containers.node_containers(docker_client, node_id):
        containers.force_remove(docker_client, container)


def _post(url: str, body: dict, key: str | None, **headers: str):
    """(status, headers, body) of POST /invoke with KEY (None: no key header at all; not
    conftest.http, which sends the test containers' key)."""
    if key is not None:
        headers[INSTANCE_KEY] = key
    req = urllib.request.Request(f"{url}/invoke", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_runtime_answers_invoke_only_with_its_key(docker_client, kinds_image, node):
    container, url, key = node(kinds_image, KINDS)
    assert len(key) >= 43 and key == containers.instance_key(container)

    for wrong in (None, "", "x" * len(key), key[:-1]):
        status, headers, body = _post(url, {"a": 1}, wrong)
        assert status == 403, (wrong, body)
        assert headers["Content-Type"].startswith("application/json")
        code, message = parse_error(body)
        assert code == ErrorCode.FORBIDDEN and INSTANCE_KEY in message and key not in message

    status, _, body = _post(url, {"a": 1}, key)
    assert status == 200 and json.loads(body)["event"] == {"a": 1}

    # /healthz stays open for the worker's probes and tells nothing secret
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
        status, body = resp.status, resp.read()
    assert status == 200 and key not in body.decode()
    # (inside a container with a pids limit the runtime adds its pids usage)
    assert set(json.loads(body)) - {"pids"} == {"status", "function", "inflight", "concurrency", "stuck"}


def test_no_container_is_made_without_a_key():
    spec = load_manifest(KINDS)
    with pytest.raises(ValueError, match="needs its key"):
        container_kwargs(spec, "img", "i1", key="", network=FUNCTION_NETWORK)
    kwargs = container_kwargs(spec, "img", "i1", key="k", network="net-id", env={INSTANCE_KEY_ENV: "other"})
    assert kwargs["environment"][INSTANCE_KEY_ENV] == "k" and kwargs["network"] == "net-id"
    assert network_name(spec) == FUNCTION_NETWORK


def test_the_key_is_kept_from_the_handlers_environment(docker_client, netprobe_image, node):
    container, url, key = node(netprobe_image, NETPROBE, handler="main:whoami")
    # Where it is visible: the container's configuration (`docker inspect`: root on the node,
    # who holds the Docker socket anyway), and the instance record in Redis.
    assert f"{INSTANCE_KEY_ENV}={key}" in container.attrs["Config"]["Env"]
    # Not in the environment the handler (and whatever it spawns) inherits.
    status, _, body = _post(url, {}, key)
    assert status == 200 and json.loads(body)["key_in_environ"] is False, body


def test_a_function_cannot_reach_another_instance(docker_client, kinds_image, netprobe_image, node):
    target, target_url, target_key = node(kinds_image, KINDS)
    prober, prober_url, prober_key = node(netprobe_image, NETPROBE)
    target.reload()
    prober.reload()

    networks = target.attrs["NetworkSettings"]["Networks"]
    assert set(networks) == {FUNCTION_NETWORK}              # not on Docker's default bridge
    assert set(prober.attrs["NetworkSettings"]["Networks"]) == {FUNCTION_NETWORK}
    published = int(target.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    gateways = {n["Gateway"] for n in prober.attrs["NetworkSettings"]["Networks"].values() if n.get("Gateway")}
    # the default bridge's gateway too (its IPAM may name only the subnet: the first address)
    for config in (docker_client.networks.get("bridge").attrs.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway") or config.get("Subnet"):
            gateways.add(config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts())))

    targets = [{"name": f"{net} {n['IPAddress']}:8080", "host": n["IPAddress"], "port": 8080}
               for net, n in networks.items() if n.get("IPAddress")]                      # (a), (b)
    targets += [{"name": f"gateway {gw}:{published}", "host": gw, "port": published}
                for gw in sorted(gateways)]                                                # (c)
    status, _, body = _post(prober_url, {"targets": targets, "timeout": 1.0}, prober_key,
                            **{"X-Gantry-Timeout": "25"})
    assert status == 200, body
    report = json.loads(body)
    results = {name: a["result"] for name, a in report["attempts"].items()}
    assert len(results) == len(targets) >= 3, results
    assert set(results.values()) <= BLOCKED, report["attempts"]

    # (d) outbound is Docker's ordinary NATed bridge: a default route through the network's
    # gateway and the engine's DNS.  (No internet here, so no connection out is tried.)
    own = prober.attrs["NetworkSettings"]["Networks"][FUNCTION_NETWORK]
    assert report["default_route"] == own["Gateway"]
    assert report["nameservers"]
    attrs = docker_client.networks.get(own["NetworkID"]).attrs
    assert attrs["Internal"] is False and attrs["Driver"] == "bridge"
    assert all(attrs["Options"].get(k) == v for k, v in NETWORK_OPTIONS.items())

    # while the gateway's path (the published port, with the key) still works
    assert _post(target_url, {"a": 1}, target_key)[0] == 200


@pytest.fixture
def scratch_network(docker_client):
    name = f"gantry-fn-test-{uuid.uuid4().hex[:8]}"
    yield name
    for network in docker_client.networks.list(names=[name]):
        if network.name == name:
            try:
                network.remove()
            except docker.errors.NotFound:
                pass


def test_agents_creating_the_network_at_once_agree_on_one(docker_client, scratch_network):
    ids, errors = [], []
    barrier = threading.Barrier(6)

    def ensure():
        try:
            barrier.wait(10)
            ids.append(containers.ensure_network(docker_client, scratch_network))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(ids)) == 1, ids
    assert containers.ensure_network(docker_client, scratch_network) == ids[0]   # idempotent
    left = [n for n in docker_client.networks.list(names=[scratch_network]) if n.name == scratch_network]
    assert [n.id for n in left] == ids[:1]
    attrs = left[0].attrs
    assert attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert attrs["Labels"]["gantry.managed"] == "1"


def test_a_network_of_the_name_that_gantry_did_not_make_is_refused(docker_client, scratch_network):
    kwargs = network_kwargs(scratch_network)
    kwargs["options"] = {}                     # inter-container traffic on, no labels
    kwargs["labels"] = {}
    docker_client.networks.create(**kwargs)
    with pytest.raises(RuntimeError, match="not made by Gantry"):
        containers.ensure_network(docker_client, scratch_network)

"""Isolation end to end: instances placed by the scheduler and started by a worker agent
cannot reach each other from inside, the gateway still reaches them (with the instance key
the worker wrote into the record), callers cannot set platform headers, and a restarted
worker agent adopts its running instances without anything changing for the gateway."""
from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request

import pytest
import redis

from gantry import keys, state
from gantry.build import build_function
from gantry_runtime import wire

pytestmark = [pytest.mark.docker, pytest.mark.redis]

HERE = os.path.dirname(os.path.abspath(__file__))
NETPROBE = os.path.join(HERE, "..", "containers", "functions", "netprobe")
BLOCKED = {"refused", "timeout", "unreachable"}


def spec_of(build, handler: str, **scaling) -> dict:
    spec = build.spec.to_dict()
    spec["handler"] = handler
    spec["scaling"].update(scaling)
    return spec


def ready(platform, name: str) -> list[dict]:
    return [i for i in platform.function(name)["instances"] if i["state"] == "ready"]


def call(platform, name: str, event, **headers: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"{platform.client.url}/v1/invoke/{name}", data=json.dumps(event).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {platform.client.api_key}",
                                                         "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=40) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def record(platform, instance_id: str) -> state.Instance:
    r = redis.Redis.from_url(platform.redis_url)
    try:
        return state.Instance.from_hash(r.hgetall(keys.instance(instance_id)))
    finally:
        r.close()


def test_instances_are_isolated_and_the_gateway_still_reaches_them(platform, kinds_build, docker_client):
    probe = build_function(docker_client, NETPROBE)
    platform.deploy("iso-target", kinds_build.image, spec_of(kinds_build, "main:echo", min_instances=1))
    platform.deploy("iso-probe", probe.image, spec_of(probe, "main:probe", min_instances=1))
    platform.deploy("iso-whoami", probe.image, spec_of(probe, "main:whoami", min_instances=1))
    target = platform.wait("the target ready", lambda: ready(platform, "iso-target"))[0]
    platform.wait("the probe ready", lambda: ready(platform, "iso-probe"))
    platform.wait("whoami ready", lambda: ready(platform, "iso-whoami"))

    # the worker wrote the key with host and port; the admin API never shows it
    inst = record(platform, target["id"])
    assert len(inst.key) >= 43 and inst.key not in json.dumps(platform.function("iso-target"))

    # from inside the probe: the target's container on each of its networks, and its published
    # port through each bridge gateway
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={target['id']}"})
    networks = container.attrs["NetworkSettings"]["Networks"]
    port = int(target["address"].rsplit(":", 1)[1])
    gateways = {n["Gateway"] for n in networks.values() if n.get("Gateway")}
    for config in (docker_client.networks.get("bridge").attrs.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway") or config.get("Subnet"):
            gateways.add(config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts())))
    targets = [{"name": f"{net} {n['IPAddress']}:8080", "host": n["IPAddress"], "port": 8080}
               for net, n in networks.items() if n.get("IPAddress")]
    targets += [{"name": f"gateway {gw}:{port}", "host": gw, "port": port} for gw in sorted(gateways)]
    status, report = call(platform, "iso-probe", {"targets": targets, "timeout": 1.0})
    assert status == 200, report
    results = {name: a["result"] for name, a in report["attempts"].items()}
    assert len(results) == len(targets) and set(results.values()) <= BLOCKED, report["attempts"]
    assert report["default_route"] and report["nameservers"]       # outbound set up as usual

    # the gateway's path works, and the platform headers are the gateway's, not the caller's
    status, body = call(platform, "iso-target", {"a": 1})
    assert status == 200 and body["event"] == {"a": 1}
    status, body = call(platform, "iso-whoami", {}, **{wire.TENANT: "forged", wire.INVOCATION_ID: "forged",
                                                      wire.INSTANCE_KEY: "forged"})
    assert status == 200, body
    assert body["tenant"] == "default" and body["invocation_id"] != "forged"
    assert body["key_in_environ"] is False

    # a worker agent that dies and comes back adopts the running container: same record, same
    # key, and the gateway goes on reaching it
    node = target["node"]
    platform.kill(node)
    platform.worker(node)
    platform.wait("the node back", lambda: [n for n in platform.client.call("GET", "/v1/nodes")["nodes"]
                                            if n["id"] == node])
    status, body = call(platform, "iso-target", {"b": 2})
    assert status == 200 and body["event"] == {"b": 2}
    again = record(platform, target["id"])
    assert (again.key, again.port, again.state) == (inst.key, inst.port, "ready")

"""The pure part of tenant isolation on a node (worker/isolation.py): which network, which
firewall rules, what a start command's level means.  The rules at work inside real
containers: tests/containers/test_tenant_isolation.py."""
from __future__ import annotations

import pytest

from gantry.manifest import FunctionSpec
from gantry.worker import isolation
from gantry.worker.containerspec import FUNCTION_NETWORK, is_function_network, network_kwargs, network_name
from gantry.worker.settings import WorkerSettings
from gantry_runtime.config import SettingsError


def test_the_level_of_a_start_command():
    assert isolation.level("node", "acme") == "node"
    assert isolation.level(None, "default") == "shared"           # a scheduler older than tenants
    assert isolation.level(None, "acme") == "container"           # never less than a tenant's floor
    assert isolation.level("", "acme") == "container"
    with pytest.raises(ValueError, match="isolation: expected one of shared, container, node"):
        isolation.level("none", "acme")


def test_the_network_of_each_level():
    spec = FunctionSpec(name="f", handler="main:h", tenant="acme")
    assert network_name(spec) == FUNCTION_NETWORK
    assert network_name(spec, "shared") == FUNCTION_NETWORK
    assert network_name(spec, "container") == network_name(spec, "node") == "gantry-t-acme"
    kwargs = network_kwargs("gantry-t-acme")
    assert kwargs["labels"]["gantry.isolation"] == "container" and kwargs["enable_ipv6"] is False
    assert "gantry.isolation" not in network_kwargs(FUNCTION_NETWORK)["labels"]
    attrs = {"Name": "gantry-t-acme", "Driver": "bridge", "Labels": kwargs["labels"], "Options": kwargs["options"]}
    assert is_function_network(attrs, "gantry-t-acme")
    unlabelled = {**attrs, "Labels": {k: v for k, v in kwargs["labels"].items() if k != "gantry.isolation"}}
    assert not is_function_network(unlabelled, "gantry-t-acme")   # its bridge would be outside the firewall


def test_rules_per_bridge_in_order():
    assert isolation.rules(["br-b", "br-a", "br-a"]) == [
        "-A GANTRY-ISOLATION -i br-a -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A GANTRY-ISOLATION -i br-a -j DROP",
        "-A GANTRY-ISOLATION -i br-b -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A GANTRY-ISOLATION -i br-b -j DROP",
        "-A GANTRY-ISOLATION -j RETURN"]
    with_coord = isolation.rules(["br-a"], [("172.18.0.1", 8000)])
    assert with_coord[1] == "-A GANTRY-ISOLATION -i br-a -d 172.18.0.1/32 -p tcp -m tcp --dport 8000 -j RETURN"
    assert with_coord[2].endswith("-j DROP")                      # the allowance comes before the drop
    assert isolation.rules([]) == ["-A GANTRY-ISOLATION -j RETURN"]


def test_restore_input_replaces_only_its_chain():
    text = isolation.restore_input(["br-a"])
    assert text.splitlines()[:2] == ["*filter", ":GANTRY-ISOLATION - [0:0]"]
    assert text.rstrip().endswith("COMMIT") and "INPUT" not in text and "-F" not in text


def test_bridge_interface_and_coord_endpoint():
    assert isolation.bridge_interface({"Id": "0123456789abcdef", "Options": {}}) == "br-0123456789ab"
    assert isolation.bridge_interface({"Id": "x", "Options": {"com.docker.network.bridge.name": "gt0"}}) == "gt0"
    assert isolation.coord_endpoint("") is None
    assert isolation.coord_endpoint("http://172.18.0.1:8000/") == ("172.18.0.1", 8000)
    assert isolation.coord_endpoint("https://gw.internal") == ("gw.internal", 443)
    with pytest.raises(ValueError, match="GANTRY_COORD_URL: expected http://HOST:PORT"):
        isolation.coord_endpoint("172.18.0.1:8000")


def test_node_tenant_setting():
    assert WorkerSettings.from_env({"GANTRY_NODE_ID": "n", "GANTRY_NODE_TENANT": "acme"}).node_tenant == "acme"
    assert WorkerSettings.from_env({"GANTRY_NODE_ID": "n"}).node_tenant == ""
    with pytest.raises(SettingsError, match="GANTRY_NODE_TENANT: expected a tenant id"):
        WorkerSettings.from_env({"GANTRY_NODE_ID": "n", "GANTRY_NODE_TENANT": "Acme!"})

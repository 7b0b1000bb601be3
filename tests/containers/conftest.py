"""Fixtures that build real images and run real containers on the local Docker engine."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

from gantry.build import build_function
from gantry.manifest import load_manifest
from gantry.worker.containers import ensure_network
from gantry.worker.containerspec import container_kwargs, network_name, published_port
from gantry_runtime.wire import INSTANCE_KEY

HERE = os.path.dirname(__file__)
FUNCTIONS = os.path.join(HERE, "functions")
EXAMPLES = os.path.join(HERE, "..", "..", "examples")
TEST_LABEL = "gantry.test"
KEY = "test-instance-key"   # the instance key of the containers ``start`` runs; ``http`` sends it


@dataclass
class Instance:
    container: object
    url: str

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """(status, headers, body) of one request; HTTP errors are results, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers={INSTANCE_KEY: KEY, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def invoke(url: str, event, timeout: float = 30):
    return http("POST", f"{url}/invoke", json.dumps(event).encode(), {"Content-Type": "application/json"},
                timeout)


def wait_ready(container, deadline_s: float = 30.0) -> str:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"container exited: {container.logs().decode(errors='replace')}")
        port = published_port(container)
        if port:
            url = f"http://127.0.0.1:{port}"
            try:
                status, _, _ = http("GET", f"{url}/healthz", timeout=1)
                if status == 200:
                    return url
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"not ready in {deadline_s}s: {container.logs().decode(errors='replace')}")


@pytest.fixture(scope="session")
def kinds_image(docker_client) -> str:
    return build_function(docker_client, os.path.join(FUNCTIONS, "kinds")).image


@pytest.fixture
def start(docker_client):
    """start(image, directory, **env) -> Instance, run with the platform's hardened settings."""
    started = []

    def _start(image: str, directory: str, wait: bool = True, **env: str) -> Instance:
        spec = load_manifest(directory)
        kwargs = container_kwargs(spec, image, uuid.uuid4().hex[:8], key=KEY,
                                  network=ensure_network(docker_client, network_name(spec)),
                                  labels={TEST_LABEL: "1"}, env=env)
        container = docker_client.containers.run(**kwargs)
        started.append(container)
        return Instance(container, wait_ready(container) if wait else "")

    yield _start
    for container in started:
        try:
            container.remove(force=True)
        except Exception:
            pass

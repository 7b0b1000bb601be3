"""The worker's Docker requests on one kept-open connection (worker/dockerconn.py), and what a
cold start asks of Docker, against the real engine."""
from __future__ import annotations

import uuid

import docker
import docker.errors
import docker.transport.unixconn as unixconn
import pytest

from gantry.worker import containers
from gantry.worker.dockerconn import persistent

pytestmark = [pytest.mark.docker]


@pytest.fixture
def connects(monkeypatch):
    """How many connections to the Docker socket were opened (a list holding the count)."""
    count = [0]
    original = unixconn.UnixHTTPConnection.connect

    def counting(conn):
        count[0] += 1
        return original(conn)
    monkeypatch.setattr(unixconn.UnixHTTPConnection, "connect", counting)
    return count


def _calls_on_many_urls(client) -> None:
    client.api.version()
    client.api.containers(all=True, filters={"label": "gantry.test=none"})
    for _ in range(3):   # a new URL each: what a start's calls on a new container id are
        with pytest.raises(docker.errors.NotFound):
            client.api.inspect_container(f"gantry-none-{uuid.uuid4().hex}")


def test_the_sdk_opens_a_connection_per_url_and_one_pool_reuses_one(connects):
    sdk = docker.from_env(timeout=60)
    try:
        _calls_on_many_urls(sdk)
        assert connects[0] >= 5          # the SDK's pools are keyed by URL (docker 7.x)
    finally:
        sdk.close()
    one = persistent(docker.from_env(timeout=60))
    connects[0] = 0                      # (from_env asked the engine its API version)
    try:
        _calls_on_many_urls(one)
        _calls_on_many_urls(one)
        assert connects[0] == 1
    finally:
        one.close()


def test_a_cold_start_is_create_start_inspect_on_the_kept_connection(connects, docker_client, node_id, kinds_image,
                                                                     kinds_spec):
    client = persistent(docker.from_env(timeout=60))
    sent = []
    request = client.api.request

    def recording(method, url, *args, **kwargs):
        sent.append((method, url.split("?")[0].rsplit("/", 1)[-1]))
        return request(method, url, *args, **kwargs)
    client.api.request = recording
    try:
        containers.start(client, node_id, "127.0.0.1", kinds_spec, kinds_image, "warm-up", 1, 1, 1.0)
        sent.clear()
        connects[0] = 0
        _, port, key = containers.start(client, node_id, "127.0.0.1", kinds_spec, kinds_image,
                                        uuid.uuid4().hex[:8], 1, 1, 1.0)
        assert [m for m, _ in sent] == ["POST", "POST", "GET"]
        assert [u for _, u in sent] == ["create", "start", "json"]
        assert connects[0] == 0 and port > 0 and key
        # a repeated start of the same instance finds its container by name and keeps its key
        sent.clear()
        instance = uuid.uuid4().hex[:8]
        first = containers.start(client, node_id, "127.0.0.1", kinds_spec, kinds_image, instance, 1, 1, 1.0)
        again = containers.start(client, node_id, "127.0.0.1", kinds_spec, kinds_image, instance, 1, 1, 1.0)
        assert again == first
    finally:
        client.close()

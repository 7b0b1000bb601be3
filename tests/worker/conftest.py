"""Worker-agent fixtures: a unique node id per test whose containers are always removed,
and the kinds test function built as an image."""
from __future__ import annotations

import uuid

import pytest
from worker_helpers import KINDS, TEST_LABEL

from gantry.build import build_function
from gantry.manifest import load_manifest


def _remove_labelled(docker_client, label: str) -> None:
    for container in docker_client.containers.list(all=True, filters={"label": [label]}):
        try:
            container.remove(force=True)
        except Exception:
            pass


@pytest.fixture
def node_id(docker_client, redis_client):
    """A fresh node id; every container labelled with it (or with this test's label) goes at the end."""
    node = f"wt-{uuid.uuid4().hex[:10]}"
    yield node
    _remove_labelled(docker_client, f"gantry.node={node}")
    _remove_labelled(docker_client, f"{TEST_LABEL}={node}")


@pytest.fixture(scope="session")
def kinds_image(docker_client) -> str:
    """The kinds test function (tests/containers/functions/kinds) built as a runtime image."""
    return build_function(docker_client, KINDS).image


@pytest.fixture
def kinds_spec():
    return load_manifest(KINDS)

"""What the worker records when a container exits (containers.exited(...).reason()): the
runtime's structured start-failure line, or the exception line on stderr, never simply the
last line logged (the runtime's "stopped", a function's own "exiting")."""
from __future__ import annotations

import os

import pytest

from gantry.build import build_function
from gantry.worker import containers

pytestmark = [pytest.mark.docker]
E2E_FUNCTIONS = os.path.join(os.path.dirname(__file__), "..", "e2e", "functions")


@pytest.mark.parametrize("function, env, reason", [
    ("vf-env-at-start", {}, "handler import failed: main.py:7: KeyError: 'DATABASE_URL'"),
    ("vf-crash-after-ready", {"CRASH_AFTER": "0.2"},
     "container exited with code 1: ConnectionError: model server at 10.0.0.7:9000 refused the connection"),
])
def test_the_reason_is_the_cause_not_the_last_line(docker_client, function, env, reason):
    image = build_function(docker_client, os.path.join(E2E_FUNCTIONS, function)).image
    container = docker_client.containers.run(image, detach=True, environment=env, labels={"gantry.test": "1"},
                                             user="10001:10001", read_only=True, network_mode="none")
    try:
        container.wait(timeout=30)
        last = container.logs(tail=1).decode().strip()
        assert reason.split(": ", 1)[1] not in last        # the last line is something else
        assert containers.exited(docker_client, container.id).reason() == reason
    finally:
        container.remove(force=True)

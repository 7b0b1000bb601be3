"""The runtime image's gantry_runtime gives a function's own code Response, SSE and @sse: the
events example in a real, hardened container."""
from __future__ import annotations

import os
import subprocess

import pytest

from gantry.build import build_function
from gantry_runtime.wire import INSTANCE_KEY

from .conftest import EXAMPLES, KEY

pytestmark = pytest.mark.docker
EVENTS = os.path.join(EXAMPLES, "events")


def test_the_events_example_streams_server_sent_events_from_a_container(docker_client, start):
    inst = start(build_function(docker_client, EVENTS).image, EVENTS)
    curl = ["curl", "-sS", "-N", "-i", "-H", f"{INSTANCE_KEY}: {KEY}", "-H", "Content-Type: application/json",
            f"{inst.url}/invoke", "-d"]
    done = subprocess.run([*curl, '{"count": 2, "delay": 0}'], capture_output=True, timeout=30)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert done.returncode == 0 and b"content-type: text/event-stream" in head.lower()
    assert body == (b'event: tick\nid: 0\ndata: {"i":0,"of":2}\n\n'
                    b'event: tick\nid: 1\ndata: {"i":1,"of":2}\n\ndata: done\n\n')
    failed = subprocess.run([*curl, '{"count": 1, "fail": true}'], capture_output=True, timeout=30)
    assert failed.returncode == 18     # cut off after the error event: never a silent success
    assert failed.stdout.partition(b"\r\n\r\n")[2] == (
        b'event: tick\nid: 0\ndata: {"i":0,"of":1}\n\n'
        b'event: error\ndata: {"code":"function_error","message":"RuntimeError: asked to fail"}\n\n')

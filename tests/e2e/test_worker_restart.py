"""A worker agent killed (kill -9) and restarted within the scheduler's node_dead_after: its
node is suspect, not dead, so nothing is reaped; the gateway keeps routing to the containers,
which keep serving; the restarted agent adopts them.  Counts every request sent meanwhile."""
from __future__ import annotations

import time

import pytest

from test_platform import live, spec_of

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(240)]

DOWN = 20.0          # seconds the agent stays dead (its heartbeat TTL is 1.5 s here)
PACE = 0.1           # seconds between requests (bounded: at most DOWN / PACE + a few hundred)


def _load(platform, name: str, seconds: float, counts: dict) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        status, _ = platform.invoke(name)
        counts["sent"] += 1
        if status != 200:
            counts["failed"] += 1
            counts.setdefault("statuses", []).append(status)
        time.sleep(PACE)


def test_a_worker_killed_for_20s_fails_no_request_and_its_containers_are_adopted(platform, kinds_build,
                                                                                 docker_client):
    platform.restart_scheduler(GANTRY_SCHEDULER_NODE_DEAD_AFTER="60")   # a grace longer than the outage
    platform.deploy("adopt-e2e", kinds_build.image, spec_of(kinds_build, min_instances=1))
    [first] = platform.wait("ready", lambda: live(platform, "adopt-e2e"))
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={first['id']}"})

    counts = {"sent": 0, "failed": 0}
    platform.kill(first["node"])            # SIGKILL: no deregistration, no cleanup
    _load(platform, "adopt-e2e", DOWN, counts)
    assert not platform.client.call("GET", "/v1/nodes")["nodes"]          # its heartbeat is gone
    platform.worker(first["node"])          # the same node comes back
    platform.wait("node back", lambda: platform.client.call("GET", "/v1/nodes")["nodes"], timeout=30)
    _load(platform, "adopt-e2e", 3.0, counts)

    print(f"worker down {DOWN:g}s: {counts['sent']} requests, {counts['failed']} failed")
    assert counts["failed"] == 0, counts
    assert [i["id"] for i in live(platform, "adopt-e2e")] == [first["id"]]   # not reaped, not replaced
    container.reload()
    assert container.status == "running"                                  # adopted, not swept as an orphan
    time.sleep(2.5)                                                       # two orphan sweeps (interval 1 s)
    container.reload()
    assert container.status == "running"
    assert platform.invoke("adopt-e2e")[0] == 200

"""Real function containers for the gateway tests: the function in functions/delivery (whose
handlers write one ``SIDE-EFFECT <tag>`` line to stdout first), run on the local Docker
engine with the platform's hardened settings.  Docker keeps a container's log after it
died, so side effects can be counted after the instance is gone."""
from __future__ import annotations

import re
import time
import urllib.request
import uuid
from pathlib import Path

from gantry.build import build_function
from gantry.manifest import load_manifest
from gantry.worker.containers import ensure_network
from gantry.worker.containerspec import container_kwargs, network_name, published_port

from .support import INSTANCE_KEY

FUNCTION_DIR = Path(__file__).parent / "functions" / "delivery"
TEST_LABEL = "gantry.test"


def build_image(docker_client) -> str:
    return build_function(docker_client, str(FUNCTION_DIR)).image


class Fleet:
    """Function containers of one test; ``remove_all`` at the end, whatever happened."""

    def __init__(self, docker_client, image: str) -> None:
        self.docker, self.image = docker_client, image
        self.spec = load_manifest(str(FUNCTION_DIR))
        self.containers: dict[str, object] = {}   # instance id -> container
        self.ports: dict[str, int] = {}

    def start(self, handler: str, count: int, prefix: str) -> list[str]:
        """Start COUNT containers running HANDLER and wait until each is healthy; their ids."""
        ids = []
        for i in range(count):
            inst_id = f"{prefix}-{i}-{uuid.uuid4().hex[:6]}"
            kwargs = container_kwargs(self.spec, self.image, inst_id, key=INSTANCE_KEY,
                                      network=ensure_network(self.docker, network_name(self.spec)),
                                      labels={TEST_LABEL: "1"}, env={"GANTRY_HANDLER": handler})
            self.containers[inst_id] = self.docker.containers.run(**kwargs)
            ids.append(inst_id)
        for inst_id in ids:
            self.ports[inst_id] = self._wait_ready(inst_id)
        return ids

    def _wait_ready(self, inst_id: str, deadline_s: float = 60.0) -> int:
        container = self.containers[inst_id]
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            container.reload()
            if container.status == "exited":
                raise AssertionError(f"{inst_id} exited: {container.logs().decode(errors='replace')}")
            port = published_port(container)
            if port:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            return port
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"{inst_id} not ready in {deadline_s}s")

    def logs(self, inst_id: str) -> str:
        return self.containers[inst_id].logs().decode(errors="replace")

    def side_effects(self, tag_prefix: str = "") -> dict[str, int]:
        """instance id -> number of SIDE-EFFECT lines whose tag starts with tag_prefix."""
        pattern = re.compile(rf"^SIDE-EFFECT {re.escape(tag_prefix)}\S*$", re.M)
        return {i: len(pattern.findall(self.logs(i))) for i in self.containers}

    def running(self, inst_id: str) -> bool:
        container = self.containers[inst_id]
        container.reload()
        return container.status == "running"

    def remove_all(self) -> None:
        for container in self.containers.values():
            try:
                container.remove(force=True)
            except Exception:
                pass

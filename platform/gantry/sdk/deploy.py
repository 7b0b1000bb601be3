"""Build a function directory into an image on the local Docker engine, as `gantry deploy`
does: the step before the API call, shared by Client and AsyncClient."""
from __future__ import annotations

from typing import Any, Callable

from ..build import BuildError, BuildResult, build_function

Progress = Callable[[str], None]


def docker_client():
    """The local Docker engine; BuildError when it cannot be reached."""
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except Exception as exc:
        raise BuildError(f"cannot reach the Docker engine ({exc}); is dockerd running? "
                         f"(scripts/setup.sh starts it)") from None


def build(path: str, progress: Progress | None) -> tuple[BuildResult, dict[str, Any]]:
    """(the build, the spec as the deploy call sends it: without its tenant, which is the
    deploying key's or the one asked for)."""
    result = build_function(docker_client(), path, progress or (lambda _line: None))
    spec = result.spec.to_dict()
    spec.pop("tenant")
    return result, spec


def takes_traffic(fn: dict[str, Any], version: int, min_instances: int) -> bool:
    """Whether VERSION is active and, for a function kept warm, has a ready instance."""
    return fn.get("active") == version and (min_instances == 0 or fn.get("ready", 0) > 0)

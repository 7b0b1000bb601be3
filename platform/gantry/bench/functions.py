"""The functions a run deploys, written to a temporary directory and built with the normal
builder (content-addressed layers on the runtime image)."""
from __future__ import annotations

import os
import shutil

from ..build import build_function

# A trivial JSON echo.  An async handler runs on the runtime's event loop (no thread hop), so
# the container adds as little as it can: the floor the gateway and nginx are compared with.
ECHO = '''"""Benchmark echo: the JSON body back, plus this build's mark."""
MARK = "{mark}"


async def handle(event, ctx):
    return {{"mark": MARK, "echo": event}}
'''

TOML = '''name = "{name}"
handler = "main:handle"
runtime = "python3.11"

[resources]
cpu = {cpu}
memory = "{memory}"

[scaling]
min_instances = {min_instances}
max_instances = {max_instances}
concurrency = {concurrency}
idle_timeout = "{idle_timeout}"

[limits]
timeout = "30s"

[env]
LOG_LEVEL = "{log_level}"
'''


def write_echo(root: str, name: str, mark: str = "v0", *, cpu: float = 1.0, memory: str = "128Mi",
               min_instances: int = 0, max_instances: int = 1, concurrency: int = 4,
               idle_timeout: str = "60s", log_level: str = "warning") -> str:
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "gantry.toml"), "w") as f:
        f.write(TOML.format(name=name, cpu=cpu, memory=memory, min_instances=min_instances,
                            max_instances=max_instances, concurrency=concurrency, idle_timeout=idle_timeout,
                            log_level=log_level))
    set_mark(directory, mark)
    return directory


def set_mark(directory: str, mark: str) -> None:
    with open(os.path.join(directory, "main.py"), "w") as f:
        f.write(ECHO.format(mark=mark))


def write_stream(root: str, repo_root: str | None, name: str, **scaling) -> str:
    """examples/stream under another name (its handler yields every ``delay`` seconds)."""
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    src = os.path.join(repo_root, "examples", "stream", "main.py") if repo_root else None
    if src and os.path.isfile(src):
        shutil.copy(src, os.path.join(directory, "main.py"))
    else:  # the same handler, for an install without the examples
        with open(os.path.join(directory, "main.py"), "w") as f:
            f.write("import time\n\n\ndef handle(event, ctx):\n    event = event if isinstance(event, dict) else {}\n"
                    "    count = int(event.get('count', 5))\n    delay = float(event.get('delay', 0.05))\n"
                    "    for i in range(count):\n        if i:\n            time.sleep(delay)\n"
                    "        yield f'chunk {i}\\n'\n")
    with open(os.path.join(directory, "gantry.toml"), "w") as f:
        f.write(TOML.format(name=name, cpu=scaling.get("cpu", 1.0), memory="128Mi",
                            min_instances=scaling.get("min_instances", 1), max_instances=1,
                            concurrency=4, idle_timeout="60s", log_level="warning"))
    return directory


def build(docker_client, directory: str):
    """BuildResult (spec, image, built layers)."""
    return build_function(docker_client, directory)


def deploy_warm_echo(ctx, name: str, mark: str) -> dict:
    """Build and deploy the echo with one instance always up (2 CPUs, 64 requests at once, the
    shape every warm-path section measures) and wait for it: the ready instance's record."""
    directory = write_echo(ctx.fn_dir, name, mark, cpu=2.0, min_instances=1, max_instances=1, concurrency=64)
    result = build(ctx.docker, directory)
    ctx.stack.deploy(spec_dict(result), result.image)
    return ctx.stack.wait(f"a ready {name} instance", lambda: ctx.stack.ready_instances(name), 90)[0]


def spec_dict(result, **overrides) -> dict:
    """The built spec as the admin API takes it, with scaling fields overridden."""
    spec = result.spec.to_dict()
    if overrides:
        spec = {**spec, "scaling": {**spec["scaling"], **overrides}}
    return spec


def remove_images(docker_client, prefix: str) -> list[str]:
    """Remove images whose repository starts with prefix (this run's function images)."""
    removed = []
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.split(":", 1)[0].startswith(prefix):
                try:
                    docker_client.images.remove(tag, force=True)
                    removed.append(tag)
                except Exception:  # noqa: BLE001 - an image still in use stays
                    pass
    return removed

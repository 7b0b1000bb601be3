"""The platform's own images: the offline base (images/base/build.sh) and the CPU runtime.

The runtime image is tagged by the hash of everything in it (base image id, Dockerfile,
gantry_runtime's source, the pinned library versions), so it is rebuilt only when one of
those changes, and every function image built on it says which runtime it carries.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from importlib import metadata

from .context import (Hasher, Progress, compile_tree, copy_tree, docker_build, image_exists, pip_install_target,
                      quiet, walk_files)
from .errors import BuildError

BASE_IMAGE = os.environ.get("GANTRY_BASE_IMAGE", "gantry/base:bookworm")
RUNTIME_REPO = "gantry/runtime"
# What the runtime needs inside the container, pinned to the versions the host runs, so the
# gateway and the runtime are tested together.
RUNTIME_LIBS = ("aiohttp", "uvloop", "msgpack")
_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "gantry")


def images_dir() -> str:
    """images/ at the top of the source tree (docs/architecture.md, "Source layout"), or
    GANTRY_IMAGES_DIR."""
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.normpath(os.path.join(here, "..", "..", "..", "images"))
    path = os.environ.get("GANTRY_IMAGES_DIR", default)
    if not os.path.isdir(path):
        raise BuildError(f"images directory not found at {path}; set GANTRY_IMAGES_DIR")
    return path


def ensure_base(client, progress: Progress = quiet) -> str:
    """The base image's id, building it offline (debootstrap) when it is missing."""
    if not image_exists(client, BASE_IMAGE):
        progress(f"base image {BASE_IMAGE} missing: building it (debootstrap, about a minute)")
        script = os.path.join(images_dir(), "base", "build.sh")
        proc = subprocess.run(["bash", script], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"base image build failed:\n{proc.stderr.strip()[-2000:]}")
    return client.images.get(BASE_IMAGE).id


def runtime_source() -> str:
    import gantry_runtime

    return os.path.dirname(os.path.abspath(gantry_runtime.__file__))


def runtime_pins() -> list[str]:
    return [f"{lib}=={metadata.version(lib)}" for lib in RUNTIME_LIBS]


def ensure_runtime_image(client, progress: Progress = quiet) -> str:
    """Tag of the runtime image for this source tree, built if it is not there yet."""
    base_id = ensure_base(client, progress)
    dockerfile = os.path.join(images_dir(), "runtime", "Dockerfile")
    src = runtime_source()
    src_files = walk_files(src, ("__pycache__", "*.pyc"))
    pins = runtime_pins()
    with open(dockerfile, encoding="utf-8") as f:
        dockerfile_text = f.read()
    digest = Hasher(base_id, dockerfile_text, *pins).tree(src, src_files).hexdigest()
    tag = f"{RUNTIME_REPO}:{digest}"
    if image_exists(client, tag):
        return tag
    progress(f"runtime image {tag}: building")
    with tempfile.TemporaryDirectory(prefix="gantry-runtime-") as ctx:
        site = os.path.join(ctx, "site")
        cached_site = os.path.join(_CACHE, "site-" + Hasher(*pins).hexdigest())
        if not os.path.isdir(cached_site):
            tmp = cached_site + ".tmp"
            subprocess.run(["rm", "-rf", tmp], check=False)
            pip_install_target(pins, tmp, progress, "runtime libraries")
            os.replace(tmp, cached_site)
        copy_tree(cached_site, site, walk_files(cached_site))
        runtime_dst = os.path.join(ctx, "runtime", "gantry_runtime")
        copy_tree(src, runtime_dst, src_files)
        compile_tree(runtime_dst)
        with open(os.path.join(ctx, "Dockerfile"), "w", encoding="utf-8") as f:
            f.write(dockerfile_text)
        docker_build(client, ctx, tag, progress, labels={"gantry.kind": "runtime"},
                     buildargs={"BASE": BASE_IMAGE})
    return tag

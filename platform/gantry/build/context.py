"""The pieces every layer build shares: content hashes, build contexts, pip on the host,
and `docker build` with its progress relayed."""
from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
from typing import Callable, Iterable

from .errors import BuildError

Progress = Callable[[str], None]

# Never part of a function's code layer.
ALWAYS_IGNORED = (".git", ".hg", "__pycache__", "*.pyc", ".venv", "venv", "node_modules",
                  ".pytest_cache", ".mypy_cache", ".DS_Store", ".gantryignore")


def quiet(_: str) -> None:
    pass


def ignore_patterns(directory: str) -> tuple[str, ...]:
    """ALWAYS_IGNORED plus the patterns of DIR/.gantryignore (one fnmatch pattern a line)."""
    patterns = list(ALWAYS_IGNORED)
    path = os.path.join(directory, ".gantryignore")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            patterns += [line.strip().rstrip("/") for line in f if line.strip() and not line.startswith("#")]
    return tuple(patterns)


def walk_files(directory: str, ignored: Iterable[str] = ()) -> list[str]:
    """Relative paths of the files under DIR, sorted, skipping ignored names and paths."""
    ignored = tuple(ignored)

    def skip(rel: str) -> bool:
        name = os.path.basename(rel)
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in ignored)

    found = []
    for root, dirs, files in os.walk(directory):
        rel_root = os.path.relpath(root, directory)
        rel_root = "" if rel_root == "." else rel_root
        dirs[:] = sorted(d for d in dirs if not skip(os.path.join(rel_root, d)))
        found += [os.path.join(rel_root, f) for f in files if not skip(os.path.join(rel_root, f))]
    return sorted(found)


class Hasher:
    """sha256 over labelled parts; the tag of a layer is the hash of everything it is made of."""

    def __init__(self, *parts: str):
        self._h = hashlib.sha256()
        for part in parts:
            self.text(part)

    def text(self, value: str) -> "Hasher":
        data = value.encode()
        self._h.update(len(data).to_bytes(8, "little") + data)
        return self

    def tree(self, directory: str, files: Iterable[str]) -> "Hasher":
        for rel in files:
            self.text(rel)
            with open(os.path.join(directory, rel), "rb") as f:
                self._h.update(hashlib.sha256(f.read()).digest())
        return self

    def hexdigest(self, length: int = 16) -> str:
        return self._h.hexdigest()[:length]


def copy_tree(src: str, dst: str, files: Iterable[str]) -> None:
    """Copy the listed files, world-readable, so the non-root function user can read them
    (the legacy builder has no COPY --chmod)."""
    for rel in files:
        target = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(src, rel), target)
        os.chmod(target, 0o644)
    for root, dirs, _ in os.walk(dst):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    os.chmod(dst, 0o755)


def pip_install_target(args: list[str], target: str, progress: Progress, what: str) -> None:
    """`pip install --target` on the host, so that `docker build` needs no network.

    The host must produce files the container's CPython 3.11 on glibc can load: a host
    Python 3.11 installs as usual (building sdists if it must); any other host asks pip for
    manylinux cp311 wheels only.
    """
    cmd = [sys.executable, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check",
           "--no-warn-script-location", "--target", target]
    if sys.version_info[:2] != (3, 11):
        cmd += ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]
    progress(f"{what}: pip install {' '.join(args)}")
    proc = subprocess.run(cmd + args, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what}: pip install failed (exit {proc.returncode}):\n{tail}")
    compile_tree(target)


def compile_tree(directory: str) -> None:
    """Byte-compile on the host (same CPython minor as the image), so a read-only container
    imports without compiling; unchecked hashes skip the mtime check."""
    import compileall
    import py_compile

    compileall.compile_dir(directory, quiet=2, workers=1,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def image_exists(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def docker_build(client, context: str, tag: str, progress: Progress, labels: dict | None = None,
                 buildargs: dict | None = None, apply_tag: bool = True) -> str:
    """Build CONTEXT/Dockerfile as TAG, relaying step lines; returns the image id.

    The tag is applied only when the build succeeds, so a failure leaves no half-tagged
    image; intermediate containers are always removed.  ``apply_tag=False`` leaves the image
    untagged (the caller tags it once it has checked it: ``tag_image``).
    """
    import docker.errors

    image_id = None
    try:
        for chunk in client.api.build(path=context, tag=tag if apply_tag else None, rm=True, forcerm=True, pull=False,
                                      decode=True, labels=labels or {}, buildargs=buildargs or {}):
            if "error" in chunk:
                raise BuildError(f"docker build of {tag} failed: {chunk['error'].strip()}")
            line = chunk.get("stream", "").strip()
            if line.startswith("Step "):
                progress(f"  {line}")
            aux = chunk.get("aux") or {}
            image_id = aux.get("ID", image_id)
    except docker.errors.APIError as exc:
        raise BuildError(f"docker build of {tag} failed: {exc.explanation or exc}") from None
    if image_id is None:
        if not apply_tag:
            raise BuildError(f"docker build of {tag} did not say which image it made")
        image_id = client.images.get(tag).id
    return image_id


def tag_image(client, image_id: str, tag: str) -> None:
    repository, _, name = tag.rpartition(":")
    client.api.tag(image_id, repository, name)


def remove_image(client, image: str) -> None:
    """Remove an image (an id or a tag) if nothing uses it; quietly keep it otherwise."""
    import docker.errors

    try:
        client.images.remove(image, noprune=False)
    except docker.errors.APIError:
        pass

"""`gantry build DIR`: a function directory -> its image, in two content-addressed layers.

    gantry/runtime:<h>               base + runtime (shared by every function)
    gantry/fn-NAME-deps:<h>          + requirements.txt installed (only when there is one)
    gantry/fn-NAME:<h>               + the code; h covers everything below it

The code layer is tagged only once its handler imports inside it (build.verify), so a
function image's tag means "deployable": a syntax error or a missing module is refused here,
with the file and line, before any version is registered.

A layer whose tag exists is not rebuilt, so a code-only change costs one small
`docker build` (a COPY of the code) and a requirements change one pip run on the host.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

from ..manifest import FunctionSpec, load_manifest
from .context import (Hasher, Progress, compile_tree, copy_tree, docker_build, ignore_patterns,
                      image_exists, pip_install_target, quiet, remove_image, tag_image, walk_files)
from .images import ensure_runtime_image, ensure_vllm_image
from .verify import HandlerCheckFailed, verify_handler

REQUIREMENTS = "requirements.txt"


@dataclass
class BuildResult:
    spec: FunctionSpec
    image: str                       # the function image's tag
    runtime_image: str
    deps_image: str | None
    built: list[str] = field(default_factory=list)   # layers built this time (others were cached)
    seconds: float = 0.0
    verify_seconds: float = 0.0      # the handler's import check inside the image (build.verify)


def build_function(client, directory: str, progress: Progress = quiet) -> BuildResult:
    """Build (or find) the image of the function in DIRECTORY."""
    started = time.monotonic()
    directory = os.path.abspath(directory)
    spec = load_manifest(directory)
    if spec.runtime == "vllm":
        return _build_vllm(client, directory, spec, progress, started)
    progress(f"building {spec.name} from {directory}")
    runtime = ensure_runtime_image(client, progress)
    result = BuildResult(spec=spec, image="", runtime_image=runtime, deps_image=None)
    parent = runtime

    req_path = os.path.join(directory, REQUIREMENTS)
    if os.path.isfile(req_path) and _has_requirements(req_path):
        with open(req_path, encoding="utf-8") as f:
            requirements = f.read()
        deps_tag = f"gantry/fn-{spec.name}-deps:{Hasher(runtime, requirements).hexdigest()}"
        if image_exists(client, deps_tag):
            progress(f"dependencies: cached ({deps_tag})")
        else:
            progress(f"dependencies: installing {REQUIREMENTS} on the host")
            _build_deps(client, req_path, runtime, deps_tag, progress)
            result.built.append(deps_tag)
        result.deps_image = parent = deps_tag

    return _code_layer(client, directory, spec, parent, result, progress, started, "code", verify=True)


def _build_vllm(client, directory: str, spec: FunctionSpec, progress: Progress, started: float) -> BuildResult:
    """A vllm function: the vLLM image of its flavour (CPU unless it asks for a GPU) plus the
    function directory (its model folder, when it ships one) under /app.  There is no handler
    to check; the manifest check made sure a shipped model folder has its config.json."""
    from ..worker.vllmengine import flavour

    engine = flavour(spec)
    progress(f"building {spec.name} from {directory} (vLLM, {engine} engine)")
    parent = ensure_vllm_image(client, progress, engine)
    result = BuildResult(spec=spec, image="", runtime_image=parent, deps_image=None)
    # no handler to check: the manifest check made sure a shipped model folder is one
    return _code_layer(client, directory, spec, parent, result, progress, started, "code and model", verify=False)


def _code_layer(client, directory: str, spec: FunctionSpec, parent: str, result: BuildResult, progress: Progress,
                started: float, what: str, verify: bool) -> BuildResult:
    """The function directory on PARENT, tagged by its content: found, or built.  With VERIFY
    the handler must import inside the image (a cached tag is checked again too)."""
    files = walk_files(directory, ignore_patterns(directory))
    code_tag = f"gantry/fn-{spec.name}:{Hasher(parent).tree(directory, files).hexdigest()}"
    if image_exists(client, code_tag):
        progress(f"{what}: cached ({code_tag})")
        # Checked again (it costs well under a second): a tag an older Gantry made unchecked
        # must not be deployed either; one that fails loses its tag.
        if verify:
            result.verify_seconds = _verify(client, code_tag, spec, progress, remove=code_tag)
    else:
        progress(f"{what}: {len(files)} files")
        # Built untagged and tagged only once its handler imports: a tag is a deployable image.
        image_id = _build_code(client, directory, files, spec, parent, code_tag, progress)
        if verify:
            result.verify_seconds = _verify(client, image_id, spec, progress, remove=image_id)
        tag_image(client, image_id, code_tag)
        result.built.append(code_tag)
    result.image = code_tag
    result.seconds = time.monotonic() - started
    progress(f"built {code_tag} in {result.seconds:.1f}s")
    return result


def _verify(client, image: str, spec: FunctionSpec, progress: Progress, remove: str) -> float:
    """verify_handler, with its time in the progress output; on failure REMOVE goes."""
    try:
        seconds = verify_handler(client, image, spec)
    except HandlerCheckFailed as exc:
        remove_image(client, remove)
        progress(f"the handler {spec.handler} does not import (checked in {exc.seconds:.2f} s); not deployable")
        raise
    progress(f"verified the handler {spec.handler} in {seconds:.2f} s")
    return seconds


def _has_requirements(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        return any(line.strip() and not line.lstrip().startswith("#") for line in f)


def _build_deps(client, req_path: str, parent: str, tag: str, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="gantry-deps-") as ctx:
        staged = os.path.join(ctx, "staged")
        pip_install_target(["-r", req_path], staged, progress, "dependencies")
        # Make the tree readable by the function's non-root user whatever the umask.
        copy_tree(staged, os.path.join(ctx, "deps"), walk_files(staged))
        shutil.rmtree(staged)
        _write(ctx, "Dockerfile", f"FROM {parent}\nCOPY deps/ /opt/gantry/deps/\n")
        docker_build(client, ctx, tag, progress, labels={"gantry.kind": "deps"})


def _build_code(client, directory: str, files: list[str], spec: FunctionSpec, parent: str, tag: str,
                progress: Progress) -> str:
    """The code layer, untagged: its image id."""
    with tempfile.TemporaryDirectory(prefix="gantry-code-") as ctx:
        code = os.path.join(ctx, "code")
        copy_tree(directory, code, files)
        compile_tree(code)
        _write(ctx, "Dockerfile",
               f"FROM {parent}\nCOPY code/ /app/\n"
               f"ENV GANTRY_FUNCTION={spec.name} GANTRY_HANDLER={spec.handler}\n")
        labels = {"gantry.kind": "function", "gantry.function": spec.name,
                  "gantry.spec": json.dumps(spec.to_dict(), separators=(",", ":"))}
        return docker_build(client, ctx, tag, progress, labels=labels, apply_tag=False)


def _write(directory: str, name: str, text: str) -> None:
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(text)

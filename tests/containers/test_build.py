"""The builder against the real engine: layers, caching, failures, the CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from gantry.build import BuildError, build_function

from .conftest import EXAMPLES, invoke

pytestmark = pytest.mark.docker


def copy_example(tmp_path, name: str, new_name: str) -> str:
    dst = tmp_path / new_name
    shutil.copytree(os.path.join(EXAMPLES, name), dst)
    toml = (dst / "gantry.toml").read_text().replace(f'name = "{name}"', f'name = "{new_name}"')
    (dst / "gantry.toml").write_text(toml)
    return str(dst)


def test_hello_builds_and_answers(docker_client, start):
    result = build_function(docker_client, os.path.join(EXAMPLES, "hello"))
    image = docker_client.images.get(result.image)
    assert image.labels["gantry.function"] == "hello"
    assert result.image.startswith("gantry/fn-hello:")
    instance = start(result.image, os.path.join(EXAMPLES, "hello"))
    status, headers, body = invoke(instance.url, {"name": "gantry"})
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert b'"hello": "gantry"' in body or b'"hello":"gantry"' in body


def test_code_only_change_rebuilds_only_the_code_layer(docker_client, tmp_path):
    directory = copy_example(tmp_path, "wordcount", "wc-layers")
    first = build_function(docker_client, directory)
    assert first.deps_image and first.image
    again = build_function(docker_client, directory)
    assert again.built == [] and again.image == first.image
    with open(os.path.join(directory, "main.py"), "a") as f:
        f.write(f"\n# a code-only change {uuid.uuid4().hex}\n")   # unique: never cached before
    changed = build_function(docker_client, directory)
    assert changed.deps_image == first.deps_image          # the dependency layer is reused
    assert changed.built == [changed.image] and changed.image != first.image


def test_failing_requirements_report_pip_error_and_tag_nothing(docker_client, tmp_path):
    directory = copy_example(tmp_path, "hello", "bad-reqs")
    (tmp_path / "bad-reqs" / "requirements.txt").write_text("gantry-no-such-package-xyz==9.9.9\n")
    with pytest.raises(BuildError) as info:
        build_function(docker_client, directory)
    message = str(info.value)
    assert "pip install failed" in message
    assert "gantry-no-such-package-xyz" in message          # pip's own words come through
    assert docker_client.images.list(name="gantry/fn-bad-reqs-deps") == []
    assert docker_client.images.list(name="gantry/fn-bad-reqs") == []


def test_cli_build_bad_manifest_is_one_clear_line(tmp_path):
    (tmp_path / "gantry.toml").write_text('name = "x"\nhandler = "main:handle"\n[resources]\nmemory = "512Q"\n')
    (tmp_path / "main.py").write_text("def handle(e, c):\n    return e\n")
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "build", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"gantry: error: {tmp_path}/gantry.toml: resources.memory: "
                                   "expected a size such as \"512Mi\" or \"2G\", got '512Q'")
    assert "Traceback" not in proc.stderr


def test_cli_build_prints_tag_and_progress(tmp_path):
    directory = copy_example(tmp_path, "hello", "cli-hello")
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", "build", directory],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("gantry/fn-cli-hello:")
    assert "code:" in proc.stderr and "built gantry/fn-cli-hello:" in proc.stderr

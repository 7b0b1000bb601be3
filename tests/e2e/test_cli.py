"""The `gantry` CLI against a running platform, as a user drives it: every command goes
through the HTTP API and answers in one line on failure."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = [pytest.mark.docker, pytest.mark.redis]
HELLO = os.path.join(HERE, "..", "..", "examples", "hello")
STREAM = os.path.join(HERE, "..", "..", "examples", "stream")


def gantry(platform, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GANTRY_URL": platform.client.url, "GANTRY_API_KEY": platform.client.api_key,
           "XDG_CONFIG_HOME": platform.tmp}
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", *args], capture_output=True, text=True,
                          env=env, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr + platform.logs()
    return proc


def test_a_user_session_through_the_cli(platform):
    deployed = gantry(platform, "deploy", HELLO)
    assert deployed.stdout.strip() == f"{platform.client.url}/v1/invoke/hello"
    assert "deployed hello version 1" in deployed.stderr

    out = gantry(platform, "invoke", "hello", "-d", '{"name": "ada"}').stdout
    assert json.loads(out) == {"hello": "ada", "echo": {"name": "ada"}}

    # the documented curl call, with the documented URL and key
    curl = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {platform.client.api_key}",
                           "-H", "Content-Type: application/json", "-d", '{"name": "curl"}',
                           f"{platform.client.url}/v1/invoke/hello"], capture_output=True, text=True, timeout=60)
    assert json.loads(curl.stdout)["hello"] == "curl"

    listing = gantry(platform, "ls").stdout.splitlines()
    assert listing[0].split() == ["NAME", "VERSION", "ACTIVE", "READY", "INSTANCES", "STATUS"]
    assert listing[1].split()[:4] == ["hello", "1", "1", "1"]

    platform.wait("logs shipped", lambda: "greeting" in gantry(platform, "logs", "hello").stdout, timeout=30)
    assert gantry(platform, "nodes").stdout.splitlines()[1].startswith(f"e2e-{platform.run_id}-n1")

    gantry(platform, "scale", "hello", "2")
    platform.wait("two ready", lambda: platform.function("hello")["ready"] == 2, timeout=60)

    gantry(platform, "deploy", STREAM)
    streamed = gantry(platform, "invoke", "stream", "-d", '{"count": 3, "delay": 0.05}', "--stream").stdout
    assert streamed == "chunk 0\nchunk 1\nchunk 2\n"

    gantry(platform, "rm", "hello")
    missing = gantry(platform, "invoke", "hello", ok=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "gantry: error: 404 not_found: no function named 'hello' is deployed"
    platform.wait("hello's instances stopped",
                  lambda: all(n["instances"] <= 1 for n in platform.client.call("GET", "/v1/nodes")["nodes"]),
                  timeout=60)                                     # only stream's instance is left


def test_cli_errors_are_one_line(platform, tmp_path):
    (tmp_path / "gantry.toml").write_text('name = "Bad"\nhandler = "main:handle"\n')
    (tmp_path / "main.py").write_text("def handle(e, c):\n    return e\n")
    bad = gantry(platform, "deploy", str(tmp_path), ok=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"gantry: error: {tmp_path}/gantry.toml: name: ")
    not_json = gantry(platform, "invoke", "hello", "-d", "{nope", ok=False)
    assert not_json.stderr.strip() == "gantry: error: -d is not valid JSON (use -d @FILE to send a file as bytes)"
    unreachable = subprocess.run([sys.executable, "-m", "gantry.cli", "ls", "--url", "http://127.0.0.1:9"],
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("gantry: error: cannot reach http://127.0.0.1:9")

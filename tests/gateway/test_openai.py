"""The OpenAI-compatible routes of vLLM functions through the gateway (gateway.openai,
gateway.invoke), against a stand-in OpenAI-compatible upstream: a small aiohttp server here
that speaks the engine's routes and its SSE framing.  It checks the gateway's logic (the
allow-list, auth, forwarding, unbuffered events, token counting, pass-through of errors);
it is no evidence of vLLM's own behaviour, which the real-engine test covers."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gantry import keys, state
from gantry.cli_metrics import format_metrics
from gantry.gateway import openai
from gantry.gateway.upstream import UpstreamPool
from gantry.manifest import FunctionSpec

from .support import AUTH, INSTANCE_KEY, add_instance, gateway, register_function, spec_dict
from .test_usage import ACME, ACME_INVOKE, _tenant_keys

pytestmark = pytest.mark.timeout(60)

MODEL = "tiny"
WORDS = ["Hello", " there", ",", " friend", "."]


# --- the stand-in engine -----------------------------------------------------------------------

def _error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    """An error in the OpenAI shape the engine answers with."""
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": status}},
                             status=status)


class Engine:
    """Answers /v1/chat/completions, /v1/completions and /v1/models as an OpenAI-compatible
    server does, behind a bearer key; records every request.  A stream waits on ``gate``
    after its first event, so a test can read that event before the rest is sent."""

    def __init__(self, api_key: str = INSTANCE_KEY) -> None:
        self.api_key = api_key
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []   # method, path, headers, body
        self.gate = asyncio.Event()
        self.first_sent = asyncio.Event()
        self.pad = 0                   # bytes of padding in a JSON answer (to make it large)
        self.server: TestServer | None = None

    async def start(self) -> "Engine":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completion)
        app.router.add_post("/v1/completions", self.completion)
        app.router.add_get("/v1/models", self.models)
        for path in ("/sleep", "/wake_up", "/is_sleeping", "/health", "/metrics", "/v1/embeddings"):
            app.router.add_route("*", path, self.forbidden_route)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    @property
    def port(self) -> int:
        return self.server.port

    async def _seen(self, request: web.Request) -> bytes:
        body = await request.read()
        self.seen.append((request.method, request.path, dict(request.headers), body))
        return body

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def forbidden_route(self, request: web.Request) -> web.Response:
        await self._seen(request)
        return web.json_response({"reached": request.path})

    async def models(self, request: web.Request) -> web.Response:
        await self._seen(request)
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)    # vLLM's own shape for this one
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm"}]})

    async def completion(self, request: web.Request) -> web.StreamResponse:
        raw = await self._seen(request)
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the body is not JSON", "BadRequestError")
        if body.get("model") == "busy":
            return _error(503, "the engine is overloaded", "ServiceUnavailableError")
        if body.get("model") != MODEL:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        chat = request.path.endswith("chat/completions")
        prompt = body.get("messages") if chat else body.get("prompt")
        usage = {"prompt_tokens": len(json.dumps(prompt)) // 4, "completion_tokens": len(WORDS),
                 "total_tokens": len(json.dumps(prompt)) // 4 + len(WORDS),
                 "prompt_tokens_details": {"cached_tokens": 0}}
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            text = "".join(WORDS)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": text, "finish_reason": "stop"})
            answer = {"id": "cmpl-1", "object": kind, "created": int(time.time()), "model": MODEL,
                      "choices": [choice], "padding": "x" * self.pad, "usage": usage}
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        for i, word in enumerate(WORDS):
            delta = {"delta": {"content": word}} if chat else {"text": word}
            chunk = {"id": "cmpl-1", "object": f"{kind}.chunk", "model": MODEL,
                     "choices": [{"index": 0, **delta, "finish_reason": None}]}   # no usage but in the last
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if i == 0:
                self.first_sent.set()
                await asyncio.wait_for(self.gate.wait(), 10)
            else:
                await asyncio.sleep(0.01)
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {"id": "cmpl-1", "object": f"{kind}.chunk", "model": MODEL, "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(final)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


@pytest.fixture
async def engine():
    eng = await Engine().start()
    yield eng
    await eng.close()


def register_vllm(r, name: str, tenant: str | None = None) -> str:
    """A function whose runtime is vllm, as a deploy writes it (under TENANT's qualified name
    if given); returns the name its keys are under."""
    data = spec_dict(name)
    data.update(runtime="vllm", handler="", model={"path": "model"})
    spec = FunctionSpec.from_dict(data)
    if tenant is not None:
        spec = dataclasses.replace(spec, tenant=tenant)
    q = spec.qualified
    r.hset(keys.function_version(q, 1), mapping={"image": "vllm:1", "spec": state.pack(spec.to_dict()),
                                                 "created": str(time.time())})
    r.hset(keys.function(q), mapping={"name": q, "latest": 1, "active": 1})
    r.sadd(keys.FUNCTIONS, q)
    return q


def _tokens(metrics_text: str, function: str) -> tuple[float, float]:
    def value(kind: str) -> float:
        m = re.search(rf'^gantry_gateway_tokens_{kind}_total\{{function="{re.escape(function)}"\}} (\S+)$',
                      metrics_text, re.M)
        return float(m.group(1)) if m else 0.0
    return value("in"), value("out")


async def _metrics_text(client) -> str:
    return await (await client.get("/metrics")).text()


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}


# --- through the gateway -----------------------------------------------------------------------

async def test_chat_completion_with_a_tenant_key_reaches_the_engine_with_the_instance_key(
        redis_url, redis_client, engine):
    q = register_vllm(redis_client, "chat", tenant="acme")
    add_instance(redis_client, q, engine.port)
    async with gateway(redis_url, app_hook=_tenant_keys, metrics_flush_interval=0.2,
                       metrics_retention=86400.0) as client:
        resp = await client.post("/v1/invoke/chat/v1/chat/completions", json=CHAT, headers=ACME_INVOKE)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert answer["choices"][0]["message"]["content"] == "".join(WORDS)
        assert len(resp.headers["X-Gantry-Invocation-Id"]) == 32
        method, path, headers, body = engine.seen[-1]
        assert (method, path) == ("POST", "/v1/chat/completions")
        assert headers["Authorization"] == f"Bearer {INSTANCE_KEY}"     # the instance's key, not the caller's
        assert ACME_INVOKE["Authorization"] not in headers.values()
        assert json.loads(body) == CHAT and headers["Content-Type"] == "application/json"
        assert headers["X-Gantry-Tenant"] == "acme"
        # tokens: the Prometheus counters and the per-minute rows of the metrics API
        want = (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])
        assert _tokens(await _metrics_text(client), q) == want
        deadline = time.monotonic() + 10
        while True:
            report = await (await client.get("/v1/functions/chat/metrics", headers=ACME)).json()
            totals = report["totals"]
            if (totals["tokens_in"], totals["tokens_out"]) == want or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert (totals["invocations"], totals["tokens_in"], totals["tokens_out"]) == (1, *want)
        assert f"tokens in {want[0]}   tokens out {want[1]}" in format_metrics(report)   # gantry metrics
        # the same usage as any invoke: the tenant's invocations
        text = await _metrics_text(client)
        assert f'gantry_gateway_requests_total{{function="{q}",status="200"}} 1.0' in text


async def test_completions_and_models(redis_url, redis_client, engine):
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/invoke/chat/v1/completions",
                                 json={"model": MODEL, "prompt": "Once", "max_tokens": 5}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["choices"][0]["text"] == "".join(WORDS)
        assert engine.seen[-1][:2] == ("POST", "/v1/completions")
        resp = await client.get("/v1/invoke/chat/v1/models", headers=AUTH)
        assert resp.status == 200, await resp.text()
        assert [m["id"] for m in (await resp.json())["data"]] == [MODEL]
        method, path, headers, body = engine.seen[-1]
        assert (method, path, body) == ("GET", "/v1/models", b"")
        assert "Content-Length" not in headers and "Content-Type" not in headers
        assert headers["Authorization"] == f"Bearer {INSTANCE_KEY}"
        # /v1/models carries no usage; the completion's was counted
        tin, tout = _tokens(await _metrics_text(client), "chat")
        assert tout == len(WORDS) and tin > 0


async def test_a_stream_is_passed_on_event_by_event_and_counted_from_its_final_usage(
        redis_url, redis_client, engine):
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    async with gateway(redis_url) as client:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        async with asyncio.timeout(20):
            resp = await client.post("/v1/invoke/chat/v1/chat/completions", json=body, headers=AUTH)
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            # the engine holds its second event until the first has reached this client
            async with asyncio.timeout(5):
                first = await resp.content.readuntil(b"\n\n")
            assert not engine.gate.is_set()
            assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["content"] == WORDS[0]
            engine.gate.set()
            rest = (await resp.content.read()).decode()
        events = [e for e in (first.decode() + rest).split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]) == "".join(WORDS)
        usage = chunks[-1]["usage"]
        assert _tokens(await _metrics_text(client), "chat") == (usage["prompt_tokens"], usage["completion_tokens"])

        # a stream whose caller did not ask for usage has none: nothing is added to the count
        engine.gate.set()
        resp = await client.post("/v1/invoke/chat/v1/chat/completions", json={**CHAT, "stream": True},
                                 headers=AUTH)
        text = await resp.text()
        assert resp.status == 200 and text.endswith("data: [DONE]\n\n") and '"usage": {' not in text
        assert json.loads(engine.seen[-1][3]).get("stream_options") is None    # the gateway added none
        assert _tokens(await _metrics_text(client), "chat") == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_a_large_json_answer_is_streamed_and_still_counted(redis_url, redis_client, engine):
    engine.pad = 200_000          # over invoke.SMALL_BODY: the answer goes through in pieces
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/invoke/chat/v1/chat/completions", json=CHAT, headers=AUTH)
        answer = await resp.json()
        assert resp.status == 200 and len(answer["padding"]) == engine.pad
        assert _tokens(await _metrics_text(client), "chat") == (answer["usage"]["prompt_tokens"], len(WORDS))


async def test_only_the_allow_listed_routes_reach_the_engine(redis_url, redis_client, engine):
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    async with gateway(redis_url) as client:
        for method, path in [("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
                             ("GET", "/health"), ("GET", "/metrics"), ("POST", "/v1/embeddings"),
                             ("POST", "/v1/sleep"), ("GET", "/v1/health"), ("POST", "/v1/../sleep"),
                             ("POST", "/v1/%2E%2E/sleep"), ("POST", "/v1/chat/completions/../../../sleep")]:
            resp = await client.request(method, f"/v1/invoke/chat{path}", json={}, headers=AUTH)
            assert resp.status == 404, (path, resp.status, await resp.text())
            assert (await resp.json())["error"]["code"] == "not_found"
        # an allowed path with the other method: 405 naming the one it takes
        resp = await client.get("/v1/invoke/chat/v1/chat/completions", headers=AUTH)
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        resp = await client.post("/v1/invoke/chat/v1/models", json={}, headers=AUTH)
        assert resp.status == 405 and resp.headers["Allow"] == "GET"
        assert engine.seen == []


async def test_auth_the_runtime_and_idempotency_are_checked_before_anything_is_sent(
        redis_url, redis_client, engine, fake_upstream):
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    python_hits = []

    async def python_fn(request: web.Request) -> web.Response:
        python_hits.append(request.path)
        return web.json_response({"ok": True})
    plain = await fake_upstream(python_fn)
    register_function(redis_client, "plain")
    add_instance(redis_client, "plain", plain.port)
    async with gateway(redis_url) as client:
        url = "/v1/invoke/chat/v1/chat/completions"
        resp = await client.post(url, json=CHAT)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        resp = await client.post(url, json=CHAT, headers={"Authorization": "Bearer gk_wrong_" + "0" * 32})
        assert resp.status == 401
        resp = await client.post(url, json=CHAT, headers={"Authorization": AUTH["Authorization"].replace(
            "Bearer", "Basic")})
        assert resp.status == 401
        resp = await client.post(url, json=CHAT, headers={**AUTH, "Idempotency-Key": "k1"})
        assert resp.status == 400 and "Idempotency-Key" in (await resp.json())["error"]["message"]
        # a function that is not vLLM: no OpenAI route, and nothing reaches its instance
        resp = await client.post("/v1/invoke/plain/v1/chat/completions", json=CHAT, headers=AUTH)
        err = (await resp.json())["error"]
        assert resp.status == 404 and err["code"] == "not_openai_compatible"
        assert "'python3.11'" in err["message"]
        resp = await client.get("/v1/invoke/plain/v1/models", headers=AUTH)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_openai_compatible"
        resp = await client.post("/v1/invoke/nobody/v1/chat/completions", json=CHAT, headers=AUTH)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
        assert engine.seen == [] and python_hits == []
        # the plain function still answers its own route
        assert (await client.post("/v1/invoke/plain", json={}, headers=AUTH)).status == 200


async def test_the_engines_own_errors_pass_through_and_count_no_tokens(redis_url, redis_client, engine):
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    async with gateway(redis_url) as client:
        url = "/v1/invoke/chat/v1/chat/completions"
        resp = await client.post(url, json={**CHAT, "model": "gpt-9"}, headers=AUTH)
        assert resp.status == 404
        err = (await resp.json())["error"]
        assert (err["type"], err["param"], err["code"]) == ("NotFoundError", "model", 404)
        resp = await client.post(url, data=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 400 and (await resp.json())["error"]["type"] == "BadRequestError"
        # the engine's 503 is an answer, not the runtime's "not started": passed on, not retried
        before = len(engine.seen)
        resp = await client.post(url, json={**CHAT, "model": "busy"}, headers=AUTH)
        assert resp.status == 503 and (await resp.json())["error"]["type"] == "ServiceUnavailableError"
        assert len(engine.seen) == before + 1
        assert _tokens(await _metrics_text(client), "chat") == (0.0, 0.0)


async def test_an_instance_with_another_key_is_refused_by_the_engine(redis_url, redis_client):
    """The engine checks its --api-key: an instance whose key is not the engine's gets 401,
    passed on (this is what keeps the engine's port useless to anyone without the key)."""
    other = await Engine(api_key="some-other-key").start()
    try:
        register_vllm(redis_client, "chat")
        add_instance(redis_client, "chat", other.port)
        async with gateway(redis_url) as client:
            resp = await client.get("/v1/invoke/chat/v1/models", headers=AUTH)
            assert resp.status == 401 and other.seen[-1][2]["Authorization"] == f"Bearer {INSTANCE_KEY}"
            assert await resp.json() == {"error": "Unauthorized"}       # the engine's body, passed on
    finally:
        await other.close()


async def test_a_request_waits_for_the_first_instance_like_any_invoke(redis_url, redis_client, engine):
    register_vllm(redis_client, "chat")
    async with gateway(redis_url, engine_cold_start_timeout=10.0) as client:
        async def later() -> None:
            await asyncio.sleep(0.5)
            add_instance(redis_client, "chat", engine.port)
            redis_client.publish(keys.EVENTS, "inst:chat")
        task = asyncio.create_task(later())
        t0 = time.monotonic()
        resp = await client.post("/v1/invoke/chat/v1/chat/completions", json=CHAT, headers=AUTH)
        await task
        assert resp.status == 200 and time.monotonic() - t0 >= 0.45
        text = await _metrics_text(client)
        assert 'gantry_gateway_cold_waits_total{function="chat"} 1.0' in text
        # and the cold-start timeout answers as invoke does when nothing comes
        redis_client.delete(keys.function_instances("chat"))
        redis_client.publish(keys.EVENTS, "inst:chat")
    # an engine's routes wait by GANTRY_ENGINE_COLD_START_TIMEOUT, not the shorter invoke's wait
    async with gateway(redis_url, engine_cold_start_timeout=0.5, cold_start_timeout=60.0) as client:
        t0 = time.monotonic()
        resp = await client.get("/v1/invoke/chat/v1/models", headers=AUTH)
        error = (await resp.json())["error"]
        assert resp.status == 503 and error["code"] == "no_capacity" and "within 0.5s" in error["message"]
        assert time.monotonic() - t0 < 10


async def test_a_body_over_the_limit_is_413(redis_url, redis_client, engine):
    register_vllm(redis_client, "chat")
    add_instance(redis_client, "chat", engine.port)
    async with gateway(redis_url, max_body=1024) as client:
        resp = await client.post("/v1/invoke/chat/v1/completions",
                                 json={"model": MODEL, "prompt": "x" * 4096}, headers=AUTH)
        assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
        assert engine.seen == []


# --- the pure parts ----------------------------------------------------------------------------

def test_usage_of_reads_the_last_usage_object():
    usage = b'"usage":{"prompt_tokens":12,"total_tokens":17,"completion_tokens":5,' \
            b'"prompt_tokens_details":{"cached_tokens":3}}'
    assert openai.usage_of(b'{"id":"x","choices":[],' + usage + b'}') == (12, 5)
    assert openai.usage_of(b'{"id":"x", "usage" : {"completion_tokens": 7, "prompt_tokens": 2}}') == (2, 7)
    # a stream: null usage in each chunk, the counted one in the last
    stream = (b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
              b'data: {"choices":[],' + usage + b'}\n\ndata: [DONE]\n\n')
    assert openai.usage_of(stream) == (12, 5)
    # a stream without the final usage chunk: nothing
    assert openai.usage_of(b'data: {"choices":[],"usage":null}\n\ndata: [DONE]\n\n') is None
    assert openai.usage_of(b'{"choices":[]}') is None
    # generated text that spells a usage object is escaped inside its JSON string
    spoof = b'{"choices":[{"text":"\\"usage\\":{\\"prompt_tokens\\":999}"}],"usage":null}'
    assert openai.usage_of(spoof) is None
    # cut off before its end: not counted
    assert openai.usage_of(b'"usage":{"prompt_tokens":12,"completion_') is None
    assert openai.usage_of(b'"usage":{}') is None


def test_the_tail_keeps_a_bounded_end_of_the_stream():
    tail = openai.Tail()
    filler = b'data: {"choices":[{"delta":{"content":"word"}}],"usage":null}\n\n'
    for _ in range(5000):                      # about 300 KB of events
        tail.feed(filler)
        assert len(tail.buf) <= 2 * openai.TAIL + len(filler)
    tail.feed(b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5000}}\n\ndata: [DONE]\n\n')
    assert tail.usage() == (4, 5000)


async def test_the_upstream_client_sends_a_get_without_a_body():
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    pool = UpstreamPool()
    try:
        port = server.sockets[0].getsockname()[1]
        up = await pool.request("GET", "127.0.0.1", port, "/v1/models", {"Authorization": "Bearer k"})
        assert up.status == 200 and await up.read() == b"ok"
        up.release()
        head = heads[0].decode()
        assert head.startswith("GET /v1/models HTTP/1.1\r\n")
        assert "content-length" not in head.lower() and "Authorization: Bearer k\r\n" in head
        with pytest.raises(ValueError):
            await pool.request("GET", "127.0.0.1", port, "/v1/models", {}, b"body")
    finally:
        await pool.close()
        server.close()

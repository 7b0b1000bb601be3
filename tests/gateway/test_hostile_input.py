"""Hostile input and a missing Redis: every answer is a documented 4xx or 503 with the JSON
error body, never a 500 or a traceback.

A real gateway on a loopback test server, real Redis, and (for invoke) a real function
container; the Redis-down case runs its own redis-server on another port and kills it.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from gantry.up import free_port

from .fleet import Fleet, build_image
from .support import AUTH, add_instance, gateway, register_function, spec_dict

pytestmark = pytest.mark.timeout(180)

DEEP = 100_000
NESTED_ARRAYS = b"[" * DEEP + b"]" * DEEP
NESTED_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP
JSON = {"Content-Type": "application/json"}
MAX_U64 = 2**64 - 1


def _spec_with(section: str, field: str, raw_number: str, name: str = "hostile") -> bytes:
    """A deploy body whose spec has FIELD in SECTION set to RAW_NUMBER, written verbatim."""
    body = json.dumps({"spec": spec_dict(name, **{section: {field: "@@"}}), "image": "img:1"})
    return body.replace('"@@"', raw_number).encode()


def _scale(raw_number: str) -> bytes:
    return b'{"min_instances": ' + raw_number.encode() + b"}"


# (what, method, path, body, extra headers, expected status)
CASES = [
    ("deploy: arrays nested 100000 deep", "POST", "/v1/functions", NESTED_ARRAYS, JSON, 400),
    ("deploy: spec nested 100000 deep", "POST", "/v1/functions",
     b'{"image": "img:1", "spec": ' + NESTED_OBJECTS + b"}", JSON, 400),
    ("deploy: spec nested 200 deep (parses)", "POST", "/v1/functions",
     b'{"image": "img:1", "spec": ' + b"[" * 200 + b"]" * 200 + b"}", JSON, 400),
    ("deploy: cpu NaN", "POST", "/v1/functions", _spec_with("resources", "cpu", "NaN"), JSON, 400),
    ("deploy: cpu Infinity", "POST", "/v1/functions", _spec_with("resources", "cpu", "Infinity"), JSON, 400),
    ("deploy: cpu -Infinity", "POST", "/v1/functions", _spec_with("resources", "cpu", "-Infinity"), JSON, 400),
    ("deploy: cpu 1e400", "POST", "/v1/functions", _spec_with("resources", "cpu", "1e400"), JSON, 400),
    ("deploy: max_instances 2**70", "POST", "/v1/functions",
     _spec_with("scaling", "max_instances", str(2**70)), JSON, 400),
    ("deploy: concurrency 10**30", "POST", "/v1/functions",
     _spec_with("scaling", "concurrency", str(10**30)), JSON, 400),
    ("deploy: memory 2**70 bytes", "POST", "/v1/functions", _spec_with("resources", "memory", str(2**70)), JSON, 400),
    ("deploy: timeout 10**30", "POST", "/v1/functions", _spec_with("limits", "timeout", str(10**30)), JSON, 400),
    ("deploy: invalid UTF-8", "POST", "/v1/functions", b'{"image": "\xff\xfe"}', JSON, 400),
    ("deploy: unknown charset (JSON is UTF-8)", "POST", "/v1/functions",
     json.dumps({"spec": spec_dict("hostile-charset"), "image": "img:1"}).encode(),
     {"Content-Type": "application/json; charset=no-such-charset"}, 201),
    ("scale: nested 100000 deep", "POST", "/v1/functions/hostile/scale", NESTED_OBJECTS, JSON, 400),
    ("scale: 2**70", "POST", "/v1/functions/hostile/scale", _scale(str(2**70)), JSON, 400),
    ("scale: 10**30", "POST", "/v1/functions/hostile/scale", _scale(str(10**30)), JSON, 400),
    ("scale: NaN", "POST", "/v1/functions/hostile/scale", _scale("NaN"), JSON, 400),
    ("scale: Infinity", "POST", "/v1/functions/hostile/scale", _scale("Infinity"), JSON, 400),
    ("scale: -Infinity", "POST", "/v1/functions/hostile/scale", _scale("-Infinity"), JSON, 400),
    ("scale: 1e400", "POST", "/v1/functions/hostile/scale", _scale("1e400"), JSON, 400),
    ("scale: -1", "POST", "/v1/functions/hostile/scale", _scale("-1"), JSON, 400),
    ("logs: after 2**64-0", "GET", f"/v1/functions/hostile/logs?after={2**64}-0", None, {}, 400),
    ("logs: after seq 2**64", "GET", f"/v1/functions/hostile/logs?after=1-{2**64}", None, {}, 400),
    ("logs: after 10**22", "GET", f"/v1/functions/hostile/logs?after={10**22}", None, {}, 400),
    ("logs: after the last id there is", "GET",
     f"/v1/functions/hostile/logs?after={MAX_U64}-{MAX_U64}", None, {}, 200),
    ("logs: after superscript two", "GET", "/v1/functions/hostile/logs?after=%C2%B2-0", None, {}, 400),
    ("logs: after Arabic-Indic digits", "GET", "/v1/functions/hostile/logs?after=%D9%A1%D9%A2-0", None, {}, 400),
    ("logs: limit 2**100", "GET", f"/v1/functions/hostile/logs?limit={2**100}", None, {}, 400),
    ("logs: limit NaN", "GET", "/v1/functions/hostile/logs?limit=NaN", None, {}, 400),
    ("logs: limit 1_0", "GET", "/v1/functions/hostile/logs?limit=1_0", None, {}, 400),
    ("logs: limit Arabic-Indic ten", "GET", "/v1/functions/hostile/logs?limit=%D9%A1%D9%A0", None, {}, 400),
    ("invoke: arrays nested 100000 deep", "POST", "/v1/invoke/hostile", NESTED_ARRAYS, JSON, 400),
    ("invoke: objects nested 100000 deep", "POST", "/v1/invoke/hostile", NESTED_OBJECTS, JSON, 400),
    ("invoke: X-Gantry-Timeout 1e400", "POST", "/v1/invoke/hostile", b'{"tag": "t"}',
     {**JSON, "X-Gantry-Timeout": "1e400"}, 400),
    ("invoke: X-Gantry-Timeout NaN", "POST", "/v1/invoke/hostile", b'{"tag": "t"}',
     {**JSON, "X-Gantry-Timeout": "NaN"}, 400),
    ("invoke: a good request still works", "POST", "/v1/invoke/hostile", b'{"tag": "t"}', JSON, 200),
]


@pytest.fixture(scope="module")
def function_image(docker_client) -> str:
    return build_image(docker_client)


@pytest.fixture
def fleet(docker_client, function_image):
    f = Fleet(docker_client, function_image)
    yield f
    f.remove_all()


async def _send(client, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
    resp = await client.request(method, path, data=body, headers={**AUTH, **headers})
    return resp.status, dict(resp.headers), await resp.read()


def _error_body_problem(status: int, headers: dict, raw: bytes) -> str | None:
    """Why an error answer is not the documented JSON error body (None when it is)."""
    if not headers.get("Content-Type", "").startswith("application/json"):
        return f"Content-Type {headers.get('Content-Type')!r}"
    try:
        err = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return f"body {raw[:120]!r}"
    if not isinstance(err.get("code"), str) or not isinstance(err.get("message"), str):
        return f"error {err!r}"
    if "Traceback" in err["message"]:
        return "a traceback in the message"
    return None


@pytest.mark.asyncio
async def test_hostile_inputs_are_answered_4xx_with_the_json_error_body(redis_url, redis_client, fleet):
    [inst] = await asyncio.to_thread(fleet.start, "main:effect", 1, "hostile")
    register_function(redis_client, "hostile", scaling={"concurrency": 1})
    add_instance(redis_client, "hostile", fleet.ports[inst], inst_id=inst)
    wrong = []
    async with gateway(redis_url) as client:
        for what, method, path, body, headers, expected in CASES:
            status, got_headers, raw = await _send(client, method, path, body, headers)
            problem = None if status < 400 else _error_body_problem(status, got_headers, raw)
            code = None
            if status >= 400 and problem is None:
                code = json.loads(raw)["error"]["code"]
                if status == 400 and code != "bad_request":
                    problem = f"code {code!r}"
            if status != expected or problem:
                wrong.append(f"{what}: expected {expected}, got {status} {code or ''} {problem or ''}")
        # the last possible cursor is an empty page, not an error
        status, _, raw = await _send(client, "GET", f"/v1/functions/hostile/logs?after={MAX_U64}-{MAX_U64}", None, {})
        if status == 200:
            assert json.loads(raw)["entries"] == []
    assert not wrong, "\n".join(wrong)
    assert sum(fleet.side_effects("t").values()) == 1    # only the good request reached the handler


@pytest.mark.asyncio
async def test_with_redis_down_the_api_answers_503_unavailable_within_bounded_time():
    """The gateway's own Redis, started here and then stopped."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed; run scripts/setup.sh")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up = None
    try:
        own = redis.Redis(port=port)
        end = time.monotonic() + 10
        while True:
            try:
                own.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.05)

        async def answer(request):
            await request.read()
            return web.json_response({"ok": True})
        app = web.Application()
        app.router.add_post("/invoke", answer)
        up = TestServer(app, host="127.0.0.1")
        await up.start_server()
        register_function(own, "cached")
        add_instance(own, "cached", up.port, inst_id="cached-1")
        own.close()

        async with gateway(f"redis://127.0.0.1:{port}/0") as client:
            status, _, _ = await _send(client, "POST", "/v1/invoke/cached", b"{}", JSON)
            assert status == 200                       # the gateway has it in its cache now
            proc.terminate()
            proc.wait(10)
            deploy = json.dumps({"spec": spec_dict("other"), "image": "img:1"}).encode()
            calls = [("GET", "/v1/functions", None), ("GET", "/v1/functions/cached", None),
                     ("POST", "/v1/functions", deploy), ("DELETE", "/v1/functions/cached", None),
                     ("POST", "/v1/functions/cached/scale", b'{"min_instances": 1}'),
                     ("GET", "/v1/functions/cached/logs", None), ("GET", "/v1/nodes", None),
                     ("POST", "/v1/invoke/never-seen", b"{}")]
            wrong = []
            for method, path, body in calls:
                t0 = time.monotonic()
                status, headers, raw = await asyncio.wait_for(_send(client, method, path, body, JSON), 20)
                took = time.monotonic() - t0
                problem = _error_body_problem(status, headers, raw)
                code = json.loads(raw)["error"]["code"] if problem is None else None
                if status != 503 or code != "unavailable" or "Retry-After" not in headers or took > 10:
                    wrong.append(f"{method} {path}: {status} {code} {problem or ''} in {took:.1f}s")
            assert not wrong, "\n".join(wrong)
            # what the gateway knows already keeps working without Redis
            status, _, _ = await _send(client, "POST", "/v1/invoke/cached", b"{}", JSON)
            assert status == 200
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if up is not None:
            await up.close()

"""The admin API under hostile specs: NaN, Infinity, 2**70 and 10**30 sent as JSON numbers
answer 400 with the field named (they were stored, or a 500 from msgpack), and a stored
record that cannot be read does not take the function list down with it."""
from __future__ import annotations

import pytest

from gantry import keys

from .support import AUTH, gateway, register_function

pytestmark = pytest.mark.timeout(60)

# JSON literals as a client can send them; Python's parser turns NaN and Infinity into floats.
LITERALS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity",
            "2**70": str(2**70), "10**30": "1" + "0" * 30, "1e400": "1e400"}
FIELDS = [("resources", "cpu"), ("resources", "memory"), ("resources", "gpu"),
          ("scaling", "min_instances"), ("scaling", "max_instances"), ("scaling", "concurrency"),
          ("scaling", "idle_timeout"), ("scaling", "keep_paused"), ("limits", "timeout")]


async def test_hostile_numbers_answer_400_naming_the_field(redis_url, redis_client):
    async def scenario():
        answers = {}
        async with gateway(redis_url) as client:
            for section, key in FIELDS:
                for label, literal in LITERALS.items():
                    body = ('{"image": "img:1", "spec": {"name": "x", "handler": "main:echo", '
                            f'"{section}": {{"{key}": {literal}}}}}}}')
                    resp = await client.post("/v1/functions", data=body,
                                             headers={**AUTH, "Content-Type": "application/json"})
                    payload = await resp.json()
                    answers[(section, key, label)] = (resp.status, payload.get("error", {}).get("message", ""))
        return answers

    answers = await scenario()
    # refused where it is first seen: the JSON layer (non-finite or past 64-bit numbers) or the
    # manifest (a readable number out of the field's range), each naming what was wrong
    wrong = {k: v for k, v in answers.items()
             if v[0] != 400 or not (v[1].startswith(f"spec: {k[0]}.{k[1]}: expected ")
                                    or v[1].startswith("the body must be a JSON object ("))}
    assert not wrong, wrong
    assert not redis_client.exists(keys.function("x"))         # nothing was stored


async def test_an_unreadable_spec_shows_an_error_and_the_others_are_still_listed(redis_url, redis_client):
    register_function(redis_client, "good")
    register_function(redis_client, "corrupt")
    register_function(redis_client, "nan-cpu")
    redis_client.hset(keys.function_version("corrupt", 1), "spec", b"\xc1 not msgpack")
    import msgpack
    bad = msgpack.unpackb(redis_client.hget(keys.function_version("nan-cpu", 1), "spec"))
    bad["resources"]["cpu"] = float("nan")                     # written past validation
    redis_client.hset(keys.function_version("nan-cpu", 1), "spec", msgpack.packb(bad))

    async def scenario():
        async with gateway(redis_url) as client:
            resp = await client.get("/v1/functions", headers=AUTH)
            assert resp.status == 200, await resp.text()
            listed = {f["name"]: f for f in (await resp.json())["functions"]}
            detail = await client.get("/v1/functions/nan-cpu", headers=AUTH)
            assert detail.status == 200, await detail.text()
            return listed, await detail.json()

    listed, detail = await scenario()
    assert set(listed) == {"good", "corrupt", "nan-cpu"}
    assert listed["good"]["error"] is None and listed["good"]["latest"] == 1
    assert "spec" in listed["corrupt"]["error"] and "v1" in listed["corrupt"]["error"]
    assert "resources.cpu" in listed["nan-cpu"]["error"]
    assert detail["error"] == listed["nan-cpu"]["error"] and detail["spec"] is None

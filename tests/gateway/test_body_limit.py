"""The request body limit an operator sets: the gateway's GANTRY_MAX_BODY, a function's
``[limits] max_body`` over it, a 413 that names the limit and where it comes from, and a
runtime started (by the worker's container spec) so that it never refuses what the gateway
let through."""
from __future__ import annotations

import pytest

from gantry.gateway.settings import GatewaySettings, SettingsError
from gantry.manifest import MAX_BODY, FunctionSpec, ManifestError
from gantry.worker.containerspec import container_kwargs

from .support import AUTH, add_instance, gateway, register_function, spec_dict

pytestmark = pytest.mark.timeout(60)

MiB = 2**20


def _runtime_env(spec: FunctionSpec) -> dict[str, str]:
    """The GANTRY_MAX_BODY the worker gives the function's container."""
    env = container_kwargs(spec, "img:1", "i1", key="k", network="gantry-fn")["environment"]
    return {"GANTRY_MAX_BODY": env["GANTRY_MAX_BODY"]}


def test_manifest_max_body_default_bounds_and_round_trip():
    assert FunctionSpec.from_dict(spec_dict("a")).limits.max_body == 0      # 0: the gateway's
    spec = FunctionSpec.from_dict(spec_dict("a", limits={"max_body": "32Mi"}))
    assert spec.limits.max_body == 32 * MiB
    assert FunctionSpec.from_dict(spec.to_dict()) == spec
    assert FunctionSpec.from_dict(spec.to_toml_dict()) == spec
    assert FunctionSpec.from_dict(spec_dict("a", limits={"max_body": "1Gi"})).limits.max_body == MAX_BODY == 2**30
    for bad in ("1025Mi", MAX_BODY + 1, "big", -1, float("nan"), True):
        with pytest.raises(ManifestError) as info:
            FunctionSpec.from_dict(spec_dict("a", limits={"max_body": bad}), source="gantry.toml")
        assert str(info.value).startswith("gantry.toml: limits.max_body: expected ")


def test_gateway_setting_is_bounded_like_the_manifest():
    assert GatewaySettings.from_env({}).max_body == 6 * MiB
    assert GatewaySettings.from_env({"GANTRY_MAX_BODY": "1Gi"}).max_body == MAX_BODY
    with pytest.raises(SettingsError, match="GANTRY_MAX_BODY: expected .* to 1Gi"):
        GatewaySettings.from_env({"GANTRY_MAX_BODY": "2Gi"})


def test_the_worker_starts_the_runtime_with_the_function_limit_or_the_largest():
    assert _runtime_env(FunctionSpec.from_dict(spec_dict("a"))) == {"GANTRY_MAX_BODY": str(MAX_BODY)}
    spec = FunctionSpec.from_dict(spec_dict("a", limits={"max_body": "8Ki"}))
    assert _runtime_env(spec) == {"GANTRY_MAX_BODY": "8192"}


async def _too_large(resp, message: str) -> None:
    assert resp.status == 413, await resp.text()
    assert (await resp.json())["error"] == {"code": "too_large", "message": message}


async def test_the_function_limit_wins_over_the_gateway_and_the_413_names_it(redis_url, redis_client, runtimes):
    own = register_function(redis_client, "own", limits={"max_body": "8Ki"})
    register_function(redis_client, "plain")   # no instance: 413 comes first
    rt = runtimes.start("main:raw", **_runtime_env(own)).wait_ready()
    add_instance(redis_client, "own", rt.port)

    async def chunks(n: int):
        for _ in range(n):
            yield b"x" * 1024

    octets = {**AUTH, "Content-Type": "application/octet-stream"}
    async with gateway(redis_url, max_body=4096, cold_start_timeout=0.3) as client:
        resp = await client.post("/v1/invoke/own", data=b"ab" * 3000, headers=octets)   # 6000 > 4096
        assert resp.status == 200 and await resp.read() == b"ba" * 3000
        for data in (b"x" * 8193, chunks(9)):
            await _too_large(await client.post("/v1/invoke/own", data=data, headers=octets),
                             "request body is over the limit of 8 KiB (this function's [limits] max_body)")
        for data in (b"x" * 4097, chunks(5)):
            await _too_large(await client.post("/v1/invoke/plain", data=data, headers=octets),
                             "request body is over the limit of 4 KiB (the gateway's GANTRY_MAX_BODY)")


async def test_a_gateway_limit_above_the_runtime_default_reaches_the_function(redis_url, redis_client, runtimes):
    """The runtime's own default is 6Mi; the worker's env lifts it, so a 7 MiB body the
    gateway accepts is not refused by the instance behind it."""
    spec = register_function(redis_client, "wide")
    rt = runtimes.start("main:raw", **_runtime_env(spec)).wait_ready()
    add_instance(redis_client, "wide", rt.port)
    body = bytes(range(256)) * (7 * MiB // 256)
    async with gateway(redis_url, max_body=8 * MiB) as client:
        resp = await client.post("/v1/invoke/wide", data=body,
                                 headers={**AUTH, "Content-Type": "application/octet-stream"})
        assert resp.status == 200, await resp.text()
        assert await resp.read() == body[::-1]
        await _too_large(await client.post("/v1/invoke/wide", data=b"x" * (8 * MiB + 1), headers=AUTH),
                         "request body is over the limit of 8 MiB (the gateway's GANTRY_MAX_BODY)")

"""GET /v1/schedules and `gantry schedules ls` on a real gateway (loopback test server, real
Redis): functions deployed with [[schedules]] through the admin API, a tick fired by the
scheduler's Ticker, the admin seeing every tenant's and a tenant key only its own."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from gantry import keys
from gantry.cli import main as cli_main
from gantry.scheduler.schedules import iso, next_tick
from gantry.scheduler.ticker import Ticker
from gantry.manifest import Schedule
from gantry.store import Store

from .support import AUTH, gateway, spec_dict

pytestmark = pytest.mark.timeout(60)

NIGHTLY = {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Paris", "payload": {"full": True},
           "priority": "low"}
MINUTELY = {"name": "minutely", "cron": "* * * * *"}


async def _deploy(client, headers, name: str, schedules: list, tenant: str | None = None) -> None:
    query = f"?tenant={tenant}" if tenant else ""
    resp = await client.post(f"/v1/functions{query}", json={"spec": {**spec_dict(name), "schedules": schedules},
                                                            "image": "img:1"}, headers=headers)
    assert resp.status == 201, await resp.text()


async def _tenant_key(client, tenant: str) -> dict[str, str]:
    resp = await client.post("/v1/tenants", json={"id": tenant}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    resp = await client.post("/v1/keys", json={"scope": "tenant-admin", "tenant": tenant}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['key']}"}


async def _list(client, headers, query: str = "") -> tuple[int, dict]:
    resp = await client.get(f"/v1/schedules{query}", headers=headers)
    return resp.status, await resp.json()


async def test_schedules_are_listed_with_next_and_last_fired_per_tenant(redis_url, redis_client, capsys):
    async with gateway(redis_url) as client:
        acme = await _tenant_key(client, "acme")
        await _deploy(client, AUTH, "backup", [NIGHTLY])
        await _deploy(client, acme, "ping", [MINUTELY])
        await _deploy(client, AUTH, "plain", [])

        # the leader fires one tick of acme.ping: first seen now, then a minute on
        r = aioredis.Redis.from_url(redis_url)
        try:
            await r.set(keys.LEADER_EPOCH, 1)
            ticker, now = Ticker(r, Store(r), catchup=3600, retention=86400), time.time()
            names = await Store(r).function_names()
            await ticker.fire(names, now, 1)
            assert await ticker.fire(names, now + 60, 1) == 1
        finally:
            await r.aclose()
        tick = next_tick(Schedule(name="minutely", cron="* * * * *"), now)

        status, body = await _list(client, AUTH)
        assert status == 200
        by_name = {s["name"]: s for s in body["schedules"]}
        assert set(by_name) == {"nightly", "minutely"}
        nightly, minutely = by_name["nightly"], by_name["minutely"]
        assert (nightly["function"], nightly["tenant"], nightly["cron"], nightly["timezone"], nightly["priority"]) == (
            "backup", "default", "30 2 * * *", "Europe/Paris", "low")
        assert nightly["next"].endswith(("T02:30:00+01:00", "T02:30:00+02:00", "T03:00:00+02:00"))
        assert nightly["next_unix"] > time.time() - 1 and nightly["last_fired"] is None and nightly["missed"] == 0
        assert (minutely["function"], minutely["tenant"]) == ("acme.ping", "acme")   # the admin's qualified name
        assert minutely["last_fired_unix"] == tick and minutely["last_fired"] == iso(tick)
        assert len(minutely["last_invocation"]) == 32

        status, own = await _list(client, acme)                  # a tenant key: its own, bare names
        assert status == 200 and [(s["function"], s["name"]) for s in own["schedules"]] == [("ping", "minutely")]
        assert own["schedules"][0]["last_invocation"] == minutely["last_invocation"]
        status, _ = await _list(client, acme, "?tenant=default")
        assert status == 404
        status, _ = await _list(client, acme, "?function=backup")     # another tenant's: not found
        assert status == 404
        status, one = await _list(client, AUTH, "?function=backup")
        assert status == 200 and [s["name"] for s in one["schedules"]] == ["nightly"]
        status, only_acme = await _list(client, AUTH, "?tenant=acme")
        assert status == 200 and [s["name"] for s in only_acme["schedules"]] == ["minutely"]

        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(cli_main, ["schedules", "ls", "--url", url, "--api-key",
                                                  AUTH["Authorization"].split()[1]])
        out = capsys.readouterr().out
        assert code == 0
        header, *rows = out.strip().splitlines()
        assert header.split()[:3] == ["FUNCTION", "SCHEDULE", "CRON"] and len(rows) == 2
        assert any(row.startswith("acme.ping") and minutely["last_invocation"] in row for row in rows)
        code = await asyncio.to_thread(cli_main, ["schedules", "ls", "--url", url, "--api-key",
                                                  AUTH["Authorization"].split()[1], "--function", "nope"])
        assert code == 1 and "no function named 'nope'" in capsys.readouterr().err

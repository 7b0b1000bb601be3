"""`gantry tenants`, `gantry keys` and `gantry whoami` as a user runs them, against a gateway
on loopback and the real Redis."""
from __future__ import annotations

import asyncio
import os
import sys

import pytest

from .support import ADMIN_KEY, ROOT, gateway

pytestmark = pytest.mark.timeout(120)


async def gantry(url: str, key: str, *argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'runtime'}", "GANTRY_URL": url,
           "GANTRY_API_KEY": key, "HOME": os.environ.get("HOME", "/tmp")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gantry.cli", *argv, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_tenants_and_keys_from_the_cli(redis_url, redis_client):
    async with gateway(redis_url) as client:
        url = str(client.make_url("")).rstrip("/")
        rc, out, err = await gantry(url, ADMIN_KEY, "tenants", "create", "acme", "--name", "Acme",
                                    "--quota", "instances=3", "--quota", "memory=4Gi")
        assert rc == 0, err
        assert "isolation: container" in out and "instances=3" in out and "memory=4Gi" in out
        rc, out, err = await gantry(url, ADMIN_KEY, "keys", "create", "--tenant", "acme", "--scope", "tenant-admin")
        assert rc == 0 and "shown once" in err, err
        key = out.strip()
        rc, out, _ = await gantry(url, key, "whoami")
        assert rc == 0 and "tenant acme, scope tenant-admin" in out
        rc, out, err = await gantry(url, key, "keys", "create", "--scope", "invoke", "--function", "hello",
                                    "--ttl", "30d")
        assert rc == 0, err
        invoke_key = out.strip()
        rc, out, _ = await gantry(url, key, "keys", "ls")
        assert rc == 0 and out.count("live") == 2 and "hello" in out and invoke_key not in out
        rc, out, err = await gantry(url, invoke_key, "tenants", "create", "evil")
        assert rc == 1 and "gantry: error:" in err and "scope (invoke)" in err and "Traceback" not in err
        rc, _, err = await gantry(url, key, "keys", "revoke", invoke_key.split("_")[1])
        assert rc == 0 and "revoked" in err
        rc, _, err = await gantry(url, invoke_key, "whoami")
        assert rc == 1 and "invalid API key" in err
        rc, out, _ = await gantry(url, ADMIN_KEY, "tenants")
        assert rc == 0 and "acme" in out and "default" in out
        rc, _, err = await gantry(url, ADMIN_KEY, "tenants", "rm")
        assert rc == 1 and "an id is needed" in err
        rc, _, err = await gantry(url, ADMIN_KEY, "tenants", "create", "x", "--quota", "disk=1")
        assert rc == 1 and "--quota 'disk=1'" in err
        rc, _, err = await gantry(url, ADMIN_KEY, "tenants", "rm", "acme")
        assert rc == 0 and "2 key(s)" in err

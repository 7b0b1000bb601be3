"""`gantry up`'s own Redis has a password: kept in the state folder (mode 0600), reused on
the next start, passed to the components in the Redis URL, never on a command line or
printed.  The real redis-server runs on a loopback port; the gateway runs against it."""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat

import aiohttp
import pytest
import redis

from gantry.gateway.app import serve
from gantry.gateway.settings import GatewaySettings
from gantry.store import Store
from gantry.up import REDIS_PASSWORD_FILE, OwnRedis, redacted, redis_password

KEY = "gk_up_" + "7" * 30


def _unauthenticated_ping(url: str) -> bytes:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(200)


def test_own_redis_refuses_unauthenticated_clients_and_serves_the_platform(tmp_path):
    state = str(tmp_path / "state")
    own = OwnRedis.start(state)
    try:
        password = redis_password(state)          # the file the server was started with
        path = os.path.join(state, REDIS_PASSWORD_FILE)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert own.url.startswith(f"redis://:{password}@127.0.0.1:")
        assert _unauthenticated_ping(own.url).startswith(b"-NOAUTH")
        with open(f"/proc/{own.process.pid}/cmdline", "rb") as f:
            assert password.encode() not in f.read()
        assert password not in repr(own) and password not in redacted(own.url)

        async def platform() -> None:
            client = redis.asyncio.from_url(own.url)
            await Store(client).set_admin_key_hash(hashlib.sha256(KEY.encode()).hexdigest())
            await client.aclose()
            settings = GatewaySettings(redis_url=own.url, port=0)   # admin key hash read from Redis
            assert password not in repr(settings)
            stop = asyncio.Event()
            started = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(serve(settings, stop, started.set_result))
            try:
                port = await asyncio.wait_for(asyncio.shield(started), 10)
                async with aiohttp.ClientSession() as session:
                    for _ in range(50):     # the hash is read at start; retried each second
                        async with session.get(f"http://127.0.0.1:{port}/v1/functions",
                                               headers={"Authorization": f"Bearer {KEY}"}) as resp:
                            if resp.status == 200:
                                assert (await resp.json())["functions"] == []
                                return
                        await asyncio.sleep(0.1)
                    pytest.fail(f"the gateway never accepted the key (last status {resp.status})")
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)

        asyncio.run(asyncio.wait_for(platform(), 30))
    finally:
        own.stop()
    assert own.process.poll() is not None


def test_the_password_file_is_reused_and_kept_private(tmp_path):
    state = str(tmp_path)
    first = redis_password(state)
    assert len(first) >= 40 and first == redis_password(state)
    path = os.path.join(state, REDIS_PASSWORD_FILE)
    os.chmod(path, 0o644)
    assert redis_password(state) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_redacted_hides_only_the_password():
    assert redacted("redis://:s3cret@127.0.0.1:6400/0") == "redis://:***@127.0.0.1:6400/0"
    assert redacted("redis://user:s3cret@h:1/2") == "redis://user:***@h:1/2"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

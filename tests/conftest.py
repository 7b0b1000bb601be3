"""Shared fixtures.  Docker and Redis are real: when either is missing the test FAILS
(CI starts both through scripts/setup.sh); nothing here skips."""
from __future__ import annotations

import os

import pytest
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("GANTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # a failure, never a skip
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); run scripts/setup.sh")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url):
    """A synchronous client on the test database, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
async def aredis(redis_url):
    """An asyncio client on the test database, emptied before and after the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def new_aredis(redis_url):
    """new_aredis() -> one more asyncio client on the test database (for calls that must really
    interleave in Redis); each is closed after the test."""
    clients = []

    def connect() -> aioredis.Redis:
        clients.append(aioredis.Redis.from_url(redis_url))
        return clients[-1]

    yield connect
    for client in clients:
        await client.aclose()


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # a failure, never a skip
        pytest.fail(f"the Docker engine is not reachable ({exc}); run scripts/setup.sh")
    yield client
    client.close()

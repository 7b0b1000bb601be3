"""What every part of the platform agrees on: where Redis is and how the admin key is kept.

Each component's own settings are frozen dataclasses beside it (gateway/settings.py,
worker/settings.py, scheduler/settings.py), read with gantry_runtime.config.Env.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from gantry_runtime.config import Env

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(env: Mapping[str, str] | None = None) -> str:
    """GANTRY_REDIS_URL, else the local default."""
    return Env(env).text("GANTRY_REDIS_URL") or DEFAULT_REDIS_URL


def redis_options() -> dict[str, Any]:
    """Connection options every platform Redis client uses.  A Redis restart closes every
    pooled connection, and redis-py's ``from_url`` retries nothing by default, so the first
    command on each old connection failed (a 503 a second after Redis was back, a worker
    command dropped); a few quick retries ride over it, and while Redis is really down a
    command still fails within about half a second."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return {"socket_connect_timeout": 5, "health_check_interval": 30,
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 3),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError]}


def redis_client(url: str):
    """The asyncio Redis client for ``url``, with ``redis_options``."""
    import redis.asyncio as aioredis

    return aioredis.from_url(url, **redis_options())


def hash_key(api_key: str) -> str:
    """The form an API key is stored and compared in (keys.ADMIN_KEY_HASH, GANTRY_ADMIN_KEY_HASH)."""
    return hashlib.sha256(api_key.encode()).hexdigest()

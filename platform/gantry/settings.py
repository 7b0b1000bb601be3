"""What every part of the platform agrees on: where Redis is and how the admin key is kept.

Each component's own settings are frozen dataclasses beside it (gateway/settings.py,
worker/settings.py, scheduler/settings.py), read with gantry_runtime.config.Env.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

from gantry_runtime.config import Env

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(env: Mapping[str, str] | None = None) -> str:
    """GANTRY_REDIS_URL, else the local default."""
    return Env(env).text("GANTRY_REDIS_URL") or DEFAULT_REDIS_URL


def hash_key(api_key: str) -> str:
    """The form an API key is stored and compared in (keys.ADMIN_KEY_HASH, GANTRY_ADMIN_KEY_HASH)."""
    return hashlib.sha256(api_key.encode()).hexdigest()

"""Tenants' sealed secrets in Redis (keys in gantry.keys, "secrets").  Only sealed bytes pass
through here: sealing and opening are gantry.tenants.secretbox's, with the master key that
the caller holds and Redis never sees."""
from __future__ import annotations

import time
from dataclasses import dataclass

from .. import keys
from ..store import ScriptRunner
from .secretbox import MAX_SECRETS


@dataclass(frozen=True)
class SecretInfo:
    name: str
    created: float
    updated: float


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _times(raw) -> tuple[float, float]:
    try:
        created, updated = _text(raw).split()
        return float(created), float(updated)
    except (ValueError, AttributeError):
        return 0.0, 0.0


class SecretLimit(Exception):
    """The tenant holds MAX_SECRETS secrets already."""


class SecretStore(ScriptRunner):

    async def put(self, tenant: str, name: str, sealed: bytes, now: float | None = None) -> bool:
        """Store a sealed secret; True if it is new, False if it replaced one.  SecretLimit
        when a new one would pass MAX_SECRETS."""
        result = int(await self._run(keys.PUT_SECRET, [keys.tenant_secrets(tenant), keys.tenant_secret_times(tenant)],
                                     [name, sealed, repr(time.time() if now is None else now), MAX_SECRETS]))
        if result < 0:
            raise SecretLimit(f"tenant {tenant!r} holds {MAX_SECRETS} secrets, the most it may")
        return result == 1

    async def delete(self, tenant: str, name: str) -> bool:
        return bool(await self._run(keys.DELETE_SECRET,
                                    [keys.tenant_secrets(tenant), keys.tenant_secret_times(tenant)], [name]))

    async def list(self, tenant: str) -> list[SecretInfo]:
        """The tenant's secrets by name, with their times (never a value, sealed or not)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hkeys(keys.tenant_secrets(tenant))
        pipe.hgetall(keys.tenant_secret_times(tenant))
        names, times = await pipe.execute()
        times = {_text(k): v for k, v in times.items()}
        return [SecretInfo(n, *_times(times.get(n))) for n in sorted(_text(n) for n in names)]

    async def sealed(self, tenant: str, names: list[str]) -> dict[str, bytes]:
        """name -> sealed bytes of those of NAMES the tenant holds (an absent one is left out)."""
        if not names:
            return {}
        values = await self.redis.hmget(keys.tenant_secrets(tenant), names)
        return {n: bytes(v) for n, v in zip(names, values) if v is not None}

    async def missing(self, tenant: str, names: list[str]) -> list[str]:
        """Those of NAMES the tenant does not hold, sorted."""
        wanted = sorted(set(names))
        if not wanted:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in wanted:
            pipe.hexists(keys.tenant_secrets(tenant), name)
        return [n for n, there in zip(wanted, await pipe.execute()) if not there]

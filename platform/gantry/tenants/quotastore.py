"""Reads of tenants' quotas and usage, and the concurrency slots (keys, "quotas" section).
Placement's reservations and deploys' counts are gantry.store's (they change node and
function records in the same scripts)."""
from __future__ import annotations

from typing import Any

from .. import keys
from ..state import decode_hash
from ..store import ScriptRunner
from .model import DEFAULT_TENANT, split
from .quota import PLACED, QuotaExceeded, check_placed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints(raw: dict) -> dict[str, int]:
    out = {}
    for k, v in decode_hash(raw).items():
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


class QuotaStore(ScriptRunner):
    """Reads of quotas and usage, and the concurrency slots (keys, "quotas" section)."""

    async def quotas(self, tenant: str) -> dict[str, int]:
        """The tenant's limits as stored (cpu in millicores); absent: unlimited."""
        return _ints(await self.redis.hgetall(keys.tenant_quota(tenant)))

    async def all_quotas(self) -> dict[str, dict[str, int]]:
        """Every tenant's stored limits (those with a record, and the default tenant)."""
        ids = sorted({_text(i) for i in await self.redis.smembers(keys.TENANTS)} | {DEFAULT_TENANT})
        pipe = self.redis.pipeline(transaction=False)
        for tenant in ids:
            pipe.hgetall(keys.tenant_quota(tenant))
        return {t: _ints(raw) for t, raw in zip(ids, await pipe.execute())}

    async def usage(self, tenant: str) -> dict[str, int]:
        """What counts against the tenant's quotas now (stored units): functions, instances,
        cpu, memory, gpus, and concurrency (live slots, lapsed ones included until dropped)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.tenant_used(tenant))
        pipe.scard(keys.tenant_functions(tenant))
        pipe.zcard(keys.tenant_inflight(tenant))
        used, functions, inflight = await pipe.execute()
        out = {resource: 0 for resource in PLACED}
        out.update(_ints(used))
        out["functions"], out["concurrency"] = int(functions), int(inflight)
        return out

    async def check_placed(self, qualified: str, cpu: int, memory: int, gpus: int) -> QuotaExceeded | None:
        """The placement hint of :func:`check_placed` for an instance of ``qualified``."""
        tenant = split(qualified)[0]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.tenant_quota(tenant))
        pipe.hgetall(keys.tenant_used(tenant))
        quotas, used = await pipe.execute()
        return check_placed(tenant, _ints(quotas), _ints(used),
                            {"instances": 1, "cpu": cpu, "memory": memory, "gpus": gpus})

    async def check_min_instances(self, qualified: str, n: int) -> None:
        """Raise QuotaExceeded when ``n`` (a min_instances asked for) is above the instances
        quota of the function's tenant: it could never be met, so it is refused up front."""
        tenant = split(qualified)[0]
        limit = (await self.quotas(tenant)).get("instances")
        if limit is not None and n > limit:
            raise QuotaExceeded(tenant, "instances", (await self.usage(tenant))["instances"], limit)

    async def acquire_slot(self, tenant: str, slot: str, limit: int, lease_ms: int) -> tuple[bool, int]:
        """Take a concurrency slot: (taken, slots held now)."""
        taken, held = await self._run(keys.TENANT_SLOT_ACQUIRE, [keys.tenant_inflight(tenant)],
                                      [slot, limit, lease_ms])
        return bool(taken), int(held)

    async def renew_slots(self, tenant: str, slots: list[str], lease_ms: int) -> int:
        if not slots:
            return 0
        return int(await self._run(keys.TENANT_SLOT_RENEW, [keys.tenant_inflight(tenant)], [lease_ms, *slots]))

    async def release_slots(self, tenant: str, slots: list[str]) -> None:
        if slots:
            await self.redis.zrem(keys.tenant_inflight(tenant), *slots)

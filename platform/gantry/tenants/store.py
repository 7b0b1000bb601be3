"""Tenant and API key records in Redis (keys in gantry.keys, "tenants, API keys")."""
from __future__ import annotations

import time

from .. import keys
from ..state import decode_hash
from ..store import ScriptRunner
from .apikeys import ApiKey
from .model import DEFAULT, DEFAULT_TENANT, Tenant, quotas_to_hash, tenant_from_hash, tenant_to_hash, split


class TenantStore(ScriptRunner):

    # --- tenants -------------------------------------------------------------------------

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant (the built-in default when it has no record), or None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.tenant(tenant_id))
        pipe.hgetall(keys.tenant_quota(tenant_id))
        raw, quota = await pipe.execute()
        if not raw:
            return DEFAULT if tenant_id == DEFAULT_TENANT else None
        return tenant_from_hash(decode_hash(raw), decode_hash(quota))

    async def tenant_ids(self) -> list[str]:
        ids = {(i.decode() if isinstance(i, bytes) else i) for i in await self.redis.smembers(keys.TENANTS)}
        return sorted(ids | {DEFAULT_TENANT})

    async def list_tenants(self) -> list[Tenant]:
        out = []
        for tenant_id in await self.tenant_ids():
            found = await self.get_tenant(tenant_id)
            if found is not None:
                out.append(found)
        return out

    async def put_tenant(self, tenant: Tenant, create: bool) -> bool:
        """Write a tenant's record and quotas; a create refuses an existing id, an update a
        missing one.  True if written."""
        fields = [x for kv in tenant_to_hash(tenant).items() for x in kv]
        quota = [x for kv in quotas_to_hash(tenant.quotas).items() for x in kv]
        return bool(await self._run(keys.PUT_TENANT,
                                    [keys.tenant(tenant.id), keys.tenant_quota(tenant.id), keys.TENANTS, keys.EVENTS],
                                    [tenant.id, "create" if create else "update", len(fields) // 2, *fields, *quota]))

    async def remove_tenant(self, tenant_id: str) -> list[str]:
        """Remove the tenant's record, quotas and keys; returns the key ids removed.  The
        caller has checked it holds no functions."""
        key_ids = [k.decode() for k in await self.redis.smembers(keys.tenant_keys(tenant_id))]
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.tenant(tenant_id), keys.tenant_quota(tenant_id), keys.tenant_keys(tenant_id),
                    keys.tenant_functions(tenant_id), keys.tenant_used(tenant_id), keys.tenant_inflight(tenant_id),
                    *(keys.api_key(k) for k in key_ids))
        pipe.srem(keys.TENANTS, tenant_id)
        pipe.publish(keys.EVENTS, f"tenant:{tenant_id}")
        for key_id in key_ids:
            pipe.publish(keys.EVENTS, f"key:{key_id}")
        await pipe.execute()
        return key_ids

    async def tenant_functions(self, tenant_id: str) -> list[str]:
        """Qualified names of the tenant's deployed functions."""
        names = [(n.decode() if isinstance(n, bytes) else n) for n in await self.redis.smembers(keys.FUNCTIONS)]
        return sorted(n for n in names if split(n)[0] == tenant_id)

    # --- API keys ------------------------------------------------------------------------

    async def add_key(self, key: ApiKey) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.api_key(key.id), mapping=key.to_hash())
        pipe.sadd(keys.tenant_keys(key.tenant), key.id)
        await pipe.execute()

    async def get_key(self, key_id: str) -> ApiKey | None:
        raw = await self.redis.hgetall(keys.api_key(key_id))
        return ApiKey.from_hash(decode_hash(raw)) if raw else None

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        tenants = [tenant_id] if tenant_id else await self.tenant_ids()
        out = []
        for t in tenants:
            for key_id in sorted(k.decode() for k in await self.redis.smembers(keys.tenant_keys(t))):
                found = await self.get_key(key_id)
                if found is not None:
                    out.append(found)
        return out

    async def revoke_key(self, key_id: str, now: float | None = None) -> bool:
        return bool(await self._run(keys.REVOKE_KEY, [keys.api_key(key_id), keys.EVENTS],
                                    [key_id, repr(time.time() if now is None else now)]))

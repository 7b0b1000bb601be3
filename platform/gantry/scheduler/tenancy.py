"""The isolation level of a function's tenant, as placement and the start command need it
(docs/tenants.md "Isolation levels").  The scheduler decides it, not the worker: the worker
never reads tenant records, it does what the start command says."""
from __future__ import annotations

import time

from ..manifest import DEFAULT_TENANT
from ..tenants.model import Isolation, Tenant
from ..tenants.store import TenantStore


def isolation_of(tenant_id: str, tenant: Tenant | None) -> str:
    """The tenant's level; a tenant without a record (removed while its functions still run,
    or a record that could not be read) gets ``container`` (a new tenant's default: never
    less isolation than it may have had), the built-in default tenant ``shared``."""
    if tenant is not None:
        return str(tenant.isolation)
    return str(Isolation.SHARED if tenant_id == DEFAULT_TENANT else Isolation.CONTAINER)


class IsolationCache:
    """Tenant id -> isolation level, read at most once per TTL seconds (about one scheduler
    pass), so a pass over many functions of one tenant reads its record once.  A changed level
    applies to instances started after the change; running ones keep their network until they
    are replaced (a redeploy, `gantry scale NAME 0` and back)."""

    def __init__(self, redis, ttl: float = 1.0) -> None:
        self._tenants = TenantStore(redis)
        self._ttl = ttl
        self._known: dict[str, tuple[str, float]] = {}

    async def get(self, tenant_id: str) -> str:
        now = time.monotonic()
        known = self._known.get(tenant_id)
        if known is not None and now - known[1] < self._ttl:
            return known[0]
        level = isolation_of(tenant_id, await self._tenants.get_tenant(tenant_id))
        self._known[tenant_id] = (level, now)
        return level

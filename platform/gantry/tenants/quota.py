"""Quotas: what a refusal says, and the pure check placement shares with Redis.  Pure: the
Redis reads and writes of what counts are gantry.tenants.quotastore and gantry.store.

The limits are keys.tenant_quota (written with the tenant).  Each is enforced atomically in
the Redis script that changes what it counts (docs/tenants.md "Quotas"):

- functions: keys.DEPLOY_VERSION refuses a new name at the limit (Store.deploy_version);
- instances, cpu, memory, gpus: keys.RESERVE_CAPACITY reserves them with the node's
  capacity, keys.RELEASE_CAPACITY gives them back with it (Store.reserve, Store.reap);
- rpm: a shared rate limit per tenant in the gateway (gantry.gateway.tenantlimits);
- concurrency: keys.TENANT_SLOT_ACQUIRE, slots with renewed leases (gantry.tenants.quotastore).

A refusal is :class:`QuotaExceeded` naming the resource, the current use and the limit, in the
units the tenant API takes (cpu in cores, memory in bytes); the gateway answers it 403
``quota_exceeded`` (rpm: 429 ``rate_limited``) with those three in the error body.
"""
from __future__ import annotations

from typing import Any

from .model import QUOTA_FIELDS

# What keys.tenant_used holds (the placement-time resources).
PLACED = ("instances", "cpu", "memory", "gpus")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_stored(resource: str, value: int | float) -> int | float:
    """A stored amount in the API's unit: cpu is stored in millicores, shown in cores."""
    return value / 1000 if resource == "cpu" else int(value)


def _size(n: int | float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size and n % size == 0:
            return f"{n // size:g} {unit}"
    return f"{n:g} bytes"


def usage_text(resource: str, current: int | float | None, limit: int | float) -> str:
    """"4 of 4 instances", "512 MiB of 1 GiB memory", "1.5 of 2 CPU cores"."""
    if resource == "memory":
        return f"{_size(current or 0)} of {_size(limit)} memory"
    unit = "CPU cores" if resource == "cpu" else QUOTA_FIELDS.get(resource, resource)
    return f"{current:g} of {limit:g} {unit}" if current is not None else f"at most {limit:g} {unit}"


class QuotaExceeded(Exception):
    """A tenant's quota refused something.  ``current`` and ``limit`` are in the API's units
    (cpu in cores); str() is the message the gateway and the scheduler show."""

    def __init__(self, tenant: str, resource: str, current: int | float, limit: int | float) -> None:
        self.tenant, self.resource, self.current, self.limit = tenant, resource, current, limit
        super().__init__(f"quota exceeded: tenant {tenant} uses {usage_text(resource, current, limit)}")

    @classmethod
    def from_reply(cls, tenant: str, reply: list) -> "QuotaExceeded":
        """From a script's {resource, used, limit} (stored units)."""
        resource = _text(reply[0])
        return cls(tenant, resource, from_stored(resource, int(reply[1])), from_stored(resource, int(reply[2])))

    def details(self) -> dict[str, Any]:
        """The fields the error body carries beside code and message."""
        return {"resource": self.resource, "current": self.current, "limit": self.limit}

    # pending_quota (keys.SET_PENDING_REASON): "RESOURCE CURRENT LIMIT" in the API's units
    def encode(self) -> str:
        return f"{self.resource} {self.current:g} {self.limit:g}"

    @classmethod
    def decode(cls, tenant: str, text: str) -> "QuotaExceeded | None":
        """The pending_quota field back ("" or unreadable: None)."""
        parts = text.split()
        if len(parts) != 3:
            return None
        try:
            current, limit = float(parts[1]), float(parts[2])
        except ValueError:
            return None
        if parts[0] != "cpu":
            current, limit = int(current), int(limit)
        return cls(tenant, parts[0], current, limit)


def check_placed(tenant: str, quotas: dict[str, int], used: dict[str, int],
                 want: dict[str, int]) -> QuotaExceeded | None:
    """Would placing ``want`` (stored units) pass the tenant's quota?  keys.RESERVE_CAPACITY
    decides the same way, atomically; this is its pure twin for a hint (placement asks it
    before making room, so no instance is stopped for what the quota would refuse)."""
    for resource in PLACED:
        limit, amount = quotas.get(resource), want.get(resource, 0)
        if limit is not None and amount > 0 and used.get(resource, 0) + amount > limit:
            return QuotaExceeded(tenant, resource, from_stored(resource, used.get(resource, 0)),
                                 from_stored(resource, limit))
    return None

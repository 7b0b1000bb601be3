"""Tenants, their quotas and isolation level, API key scopes, and how a function's name is
qualified by its tenant.  Pure: no I/O (gantry.tenants.store reads and writes the records).

Every function belongs to one tenant.  A function's *qualified* name is what every Redis key,
instance record, container label and metric of it carries: the bare name for the default
tenant (so a single-tenant platform's records are exactly what they always were), and
``TENANT.NAME`` for any other.  Function names and tenant ids are ``[a-z][a-z0-9-]*``, so the
dot can only be the separator and a qualified name splits one way.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from ..manifest import DEFAULT_TENANT, TENANT_RE as TENANT_ID_RE

MAX_TENANT_NAME = 100
MAX_FEATURES = 32
FEATURE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class Isolation(StrEnum):
    """How a tenant's instances are kept from everything else (docs/tenants.md)."""
    SHARED = "shared"          # logical separation only: the common function network
    CONTAINER = "container"    # a network of the tenant's own; no way to the host or other tenants
    NODE = "node"              # as container, and only on nodes labelled for the tenant


class Scope(StrEnum):
    """What an API key may do.  ``admin`` is platform-wide; the others act in the key's tenant."""
    ADMIN = "admin"                  # everything, every tenant: tenants, quotas, nodes
    TENANT_ADMIN = "tenant-admin"    # everything within its tenant: functions, keys, secrets, usage
    DEPLOY = "deploy"                # deploy, scale, delete, read and invoke functions
    INVOKE = "invoke"                # invoke functions, nothing else


# What each scope allows ("action" names used by the gateway's checks).
SCOPE_ACTIONS: dict[Scope, frozenset[str]] = {
    Scope.ADMIN: frozenset({"invoke", "read", "deploy", "keys", "secrets", "usage", "tenants", "nodes", "audit"}),
    Scope.TENANT_ADMIN: frozenset({"invoke", "read", "deploy", "keys", "secrets", "usage", "audit"}),
    Scope.DEPLOY: frozenset({"invoke", "read", "deploy"}),
    Scope.INVOKE: frozenset({"invoke"}),
}


# Quotas: resource -> (unit for messages, kind).  None (absent) means unlimited.
QUOTA_FIELDS: dict[str, str] = {
    "functions": "functions",              # deployed functions
    "instances": "instances",              # live instances (pending to paused: what holds capacity)
    "cpu": "cores",                        # cores reserved by live instances (their cpu_request)
    "memory": "bytes",                     # memory reserved by live instances
    "gpus": "GPUs",                        # GPUs held by live instances
    "rpm": "requests per minute",          # invocations admitted per minute, across gateways
    "concurrency": "invocations in flight",  # concurrent invocations, across gateways
}
MAX_QUOTA = 2**53                          # far above any real limit; refuses typos and 2**70


@dataclass(frozen=True)
class Quotas:
    functions: int | None = None
    instances: int | None = None
    cpu: float | None = None               # cores
    memory: int | None = None              # bytes
    gpus: int | None = None
    rpm: int | None = None
    concurrency: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Only the limits that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def limit(self, resource: str) -> int | float | None:
        return getattr(self, resource)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str = ""
    isolation: Isolation = Isolation.CONTAINER
    quotas: Quotas = field(default_factory=Quotas)
    features: tuple[str, ...] = ()
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name or self.id, "isolation": str(self.isolation),
                "quotas": self.quotas.to_dict(), "features": list(self.features), "created": self.created}


# The default tenant exists without a record (a platform that never made one behaves as it
# always did); a record, once written (`gantry tenants update default ...`), overrides it.
DEFAULT = Tenant(id=DEFAULT_TENANT, name="default", isolation=Isolation.SHARED)


class TenantError(ValueError):
    """A tenant or key field that does not validate; str() names the field and expectation."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def qualify(tenant: str, name: str) -> str:
    """The qualified name of function NAME of TENANT (see the module doc)."""
    return name if tenant == DEFAULT_TENANT else f"{tenant}.{name}"


def split(qualified: str) -> tuple[str, str]:
    """(tenant, bare name) of a qualified function name."""
    tenant, dot, name = qualified.partition(".")
    return (tenant, name) if dot else (DEFAULT_TENANT, qualified)


def check_id(value: Any, what: str = "id") -> str:
    if not isinstance(value, str) or not TENANT_ID_RE.match(value):
        raise TenantError(what, f"expected [a-z][a-z0-9-]{{0,30}} (lower-case, starts with a letter), "
                                f"got {_shown(value)}")
    return value


def parse_quotas(data: Any, base: Quotas | None = None) -> Quotas:
    """Quotas from a JSON object (resource -> limit, null to remove one), over ``base``."""
    if not isinstance(data, dict):
        raise TenantError("quotas", "expected an object of resource -> limit")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in QUOTA_FIELDS:
            raise TenantError(f"quotas.{key}", f"unknown resource; expected one of {', '.join(QUOTA_FIELDS)}")
        if value is None:
            changes[key] = None
            continue
        if key == "memory" and isinstance(value, str):
            from ..quantities import parse_size
            try:
                value = parse_size(value, most=MAX_QUOTA)
            except ValueError as exc:
                raise TenantError("quotas.memory", str(exc)) from None
        if key == "cpu":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not 0 <= value <= MAX_QUOTA:
                raise TenantError("quotas.cpu", f"expected a number of cores >= 0, got {_shown(value)}")
            changes[key] = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUOTA:
                raise TenantError(f"quotas.{key}", f"expected a whole number >= 0 (null: no limit), got {_shown(value)}")
            changes[key] = value
    return replace(base or Quotas(), **changes)


def parse_isolation(value: Any) -> Isolation:
    try:
        return Isolation(value)
    except ValueError:
        raise TenantError("isolation", f"expected one of {', '.join(i.value for i in Isolation)}, "
                                       f"got {_shown(value)}") from None


def parse_features(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_FEATURES or not all(
            isinstance(f, str) and FEATURE_RE.match(f) for f in value):
        raise TenantError("features", f"expected a list of at most {MAX_FEATURES} names "
                                      f"([a-z][a-z0-9_-]*), got {_shown(value)}")
    return tuple(sorted(set(value)))


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TENANT_NAME:
        raise TenantError("name", f"expected a display name of 1 to {MAX_TENANT_NAME} characters, got {_shown(value)}")
    return value.strip()


def tenant_from_request(data: dict[str, Any], base: Tenant | None = None) -> Tenant:
    """A tenant from a create (``base`` None: ``id`` required) or update body."""
    allowed = {"name", "isolation", "quotas", "features"} | ({"id"} if base is None else set())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TenantError(unknown[0], f"unknown field; expected {', '.join(sorted(allowed))}")
    if base is None:
        base = Tenant(id=check_id(data.get("id")))
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = parse_name(data["name"])
    if "isolation" in data:
        changes["isolation"] = parse_isolation(data["isolation"])
    if "quotas" in data:
        changes["quotas"] = parse_quotas(data["quotas"], base.quotas)
    if "features" in data:
        changes["features"] = parse_features(data["features"])
    return replace(base, **changes)


# --- Redis encoding (HASH fields are strings) --------------------------------------------

def tenant_to_hash(t: Tenant) -> dict[str, str]:
    return {"id": t.id, "name": t.name or t.id, "isolation": str(t.isolation),
            "features": ",".join(t.features), "created": repr(t.created)}


def quotas_to_hash(q: Quotas) -> dict[str, str]:
    """keys.tenant_quota: resource -> limit (cpu in millicores, as placement counts it)."""
    out = {}
    for f in fields(q):
        value = getattr(q, f.name)
        if value is not None:
            out[f.name] = str(int(round(value * 1000))) if f.name == "cpu" else str(value)
    return out


def tenant_from_hash(raw: dict[str, str], quota_raw: dict[str, str]) -> Tenant:
    quotas: dict[str, Any] = {}
    for name in QUOTA_FIELDS:
        if name in quota_raw:
            quotas[name] = int(quota_raw[name]) / 1000 if name == "cpu" else int(quota_raw[name])
    return Tenant(id=raw["id"], name=raw.get("name", raw["id"]),
                  isolation=Isolation(raw.get("isolation", Isolation.CONTAINER)),
                  quotas=Quotas(**quotas),
                  features=tuple(f for f in raw.get("features", "").split(",") if f),
                  created=float(raw.get("created", 0) or 0))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

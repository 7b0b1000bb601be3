"""Bearer API keys -> principals.

Keys are never stored or logged: only their SHA-256 is kept and compared in constant time
(``hmac.compare_digest``).  Today the only principal is the admin (its key hash comes from the
settings or keys.ADMIN_KEY_HASH); tenant keys plug in as further lookups in ``resolve``.

Guessing is rate-limited per client address (the connection's peer: behind a load balancer,
the balancer's): each wrong key counts against ``failures`` (GANTRY_AUTH_FAILURE_RATE and
_BURST), and an address over its limit is answered 429 with Retry-After before its key is
looked at, so a right key can no more be told from a wrong one than checked faster.

A function instance presents a coordination token instead (gantry_runtime.coord.coord_token):
it is good for /v1/coord/ only, and is refused (403) anywhere else before it is looked at.
Checking it needs the instance record, so ``authenticate`` returns it as an *unverified*
principal (kind "coord") and gateway.coord_api verifies it on every call, before anything.
"""
from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass

from aiohttp import web
from gantry_runtime.coord import token_instance

from ..settings import hash_key
from ..tenants.model import DEFAULT_TENANT, SCOPE_ACTIONS, TENANT_ID_RE, Scope
from .admission import Admission
from .errors import ApiError

ADMIN_TENANT = DEFAULT_TENANT


@dataclass(frozen=True)
class Principal:
    kind: str            # "admin" (the platform's admin key), "key" (an API key), "coord" (a function's token, unverified here)
    tenant: str          # the tenant it acts in; sent to the function as X-Gantry-Tenant
    key_id: str          # what may appear in logs instead of the key
    scope: Scope = Scope.ADMIN
    functions: tuple[str, ...] = ()     # bare names an API key is limited to; () for all

    @property
    def is_admin(self) -> bool:
        return self.scope == Scope.ADMIN and self.kind != COORD


ADMIN = Principal(kind="admin", tenant=ADMIN_TENANT, key_id="admin")
COORD = "coord"
COORD_PATH = "/v1/coord/"


class Authenticator:
    """Resolves a presented key to a principal.  ``admin_hash`` may change at run time (the
    cache refresh rereads it from Redis when the settings do not fix it)."""

    def __init__(self, admin_hash: str | None = None, failures: Admission | None = None) -> None:
        self.admin_hash = admin_hash
        self.failures = failures or Admission(0, 1)     # the default: wrong keys are not limited

    def resolve(self, key: str) -> Principal | None:
        digest = hash_key(key)
        admin = self.admin_hash
        if admin is not None and hmac.compare_digest(digest, admin):
            return ADMIN
        return None

    def authenticate(self, request: web.Request) -> Principal:
        client = request.remote or ""
        now = asyncio.get_running_loop().time()
        self.failures.hold(client, now)
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer KEY'",
                           {"WWW-Authenticate": "Bearer"})
        instance = token_instance(key)
        if instance is not None:
            if not request.path.startswith(COORD_PATH):
                raise ApiError(403, "forbidden", "a function's coordination token is good for /v1/coord/ only")
            return Principal(kind=COORD, tenant=ADMIN_TENANT, key_id="coord:" + instance[:64], scope=Scope.INVOKE)
        principal = self.resolve(key)
        if principal is None:
            self.failures.check(client, now)     # counts it (admitted: hold just passed)
            raise ApiError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})
        return principal


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this operation needs the admin key")


def require(principal: Principal, action: str) -> None:
    """403 unless the principal's scope allows ACTION (tenants.model.SCOPE_ACTIONS)."""
    if principal.kind == COORD or action not in SCOPE_ACTIONS[principal.scope]:
        raise ApiError(403, "forbidden", f"this key's scope ({principal.scope}) does not allow {action}")


def acting_tenant(request: web.Request, principal: Principal) -> str:
    """The tenant a call acts in: the key's own; the platform admin may name another with
    ``?tenant=ID`` (the default tenant otherwise).  A tenant key naming another tenant is
    refused as if that tenant did not exist."""
    asked = request.query.get("tenant")
    if asked is None or asked == principal.tenant:
        return principal.tenant
    if not principal.is_admin or not TENANT_ID_RE.match(asked):
        raise ApiError(404, "not_found", f"no tenant {asked[:40]!r}")
    return asked

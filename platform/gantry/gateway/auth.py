"""Bearer API keys -> principals.

Keys are never stored or logged: only their SHA-256 is kept and compared in constant time
(``hmac.compare_digest``).  The platform's admin key (its hash from the settings or
keys.ADMIN_KEY_HASH) acts in every tenant; API keys (gantry.tenants.apikeys) act in their
tenant within their scope (docs/tenants.md).

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
import time
from dataclasses import dataclass

from aiohttp import web
from gantry_runtime.coord import token_instance

from ..settings import hash_key
from ..store import UNAVAILABLE
from ..tenants.apikeys import ApiKey, key_id_of
from ..tenants.store import TenantStore
from ..manifest import NAME_RE, QUALIFIED_RE
from ..tenants.model import DEFAULT_TENANT, SCOPE_ACTIONS, TENANT_ID_RE, Scope, qualify
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


KEY_RECHECK = 2.0      # seconds a resolved API key is trusted before Redis is asked again
KEY_REFRESH_AHEAD = 4.0  # ... up to this age it is still served while a background read rechecks it
KEY_STALE_OK = 60.0    # ... and how long past that it is still used while Redis cannot answer
MAX_KNOWN_KEYS = 100_000


class Authenticator:
    """Resolves a presented key to a principal.  ``admin_hash`` may change at run time (the
    cache refresh rereads it from Redis when the settings do not fix it).

    API keys (gantry.tenants.apikeys) are looked up by the id their prefix names and kept
    here: for KEY_RECHECK seconds as they are; then, up to KEY_REFRESH_AHEAD, still served
    while one background read rechecks them, so a key in steady use never makes a request
    wait for Redis; a key idle longer is read again before it is served.  A revocation
    announces "key:ID" (keys.REVOKE_KEY) and every replica drops the key at once
    (``forget``); if that announcement is lost, the recheck refuses the key within about
    KEY_RECHECK seconds of its next use.  A key's expiry is compared on every request."""

    def __init__(self, admin_hash: str | None = None, failures: Admission | None = None,
                 keys: TenantStore | None = None) -> None:
        self.admin_hash = admin_hash
        self.failures = failures or Admission(0, 1)     # the default: wrong keys are not limited
        self.keys = keys
        self._known: dict[str, tuple[ApiKey, float]] = {}    # key id -> (record, monotonic time read)
        self._rechecks: dict[str, asyncio.Task] = {}        # key id -> its background recheck

    def forget(self, key_id: str) -> None:
        self._known.pop(key_id, None)

    def _remember(self, key_id: str, found: ApiKey | None, read_at: float) -> None:
        if found is None:
            self._known.pop(key_id, None)
            return
        if len(self._known) >= MAX_KNOWN_KEYS:
            self._known.clear()
        self._known[key_id] = (found, read_at)

    async def _recheck(self, key_id: str) -> None:
        try:
            read_at = time.monotonic()
            found = await self.keys.get_key(key_id)
            if key_id in self._known:        # not forgotten (revoked) while the read was out
                self._remember(key_id, found, read_at)
        except Exception:   # noqa: BLE001 - Redis away or a bad record: the next use reads it in line
            pass
        finally:
            self._rechecks.pop(key_id, None)

    async def _api_key(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._known.get(key_id)
        if cached is not None:
            age = now - cached[1]
            if age < KEY_RECHECK:
                return cached[0]
            if age < KEY_REFRESH_AHEAD and self.keys is not None:
                if key_id not in self._rechecks:
                    self._rechecks[key_id] = asyncio.create_task(self._recheck(key_id), name="gantry-key-recheck")
                return cached[0]
        if self.keys is None:
            return None
        try:
            found = await self.keys.get_key(key_id)
        except UNAVAILABLE:
            if cached is not None and now - cached[1] < KEY_RECHECK + KEY_STALE_OK:
                return cached[0]     # Redis is away: nobody can revoke either; keep serving
            raise ApiError(503, "unavailable", "the gateway cannot read API keys (Redis unreachable)") from None
        except (KeyError, ValueError):
            found = None             # an unreadable record is no key
        self._remember(key_id, found, now)
        return found

    async def resolve(self, key: str) -> Principal | None:
        digest = hash_key(key)
        admin = self.admin_hash
        if admin is not None and hmac.compare_digest(digest, admin):
            return ADMIN
        key_id = key_id_of(key)
        if key_id is None:
            return None
        record = await self._api_key(key_id)
        if record is None or not hmac.compare_digest(digest, record.hash) or not record.live(time.time()):
            return None
        return Principal(kind="key", tenant=record.tenant, key_id=record.id, scope=record.scope,
                         functions=record.functions)

    async def authenticate(self, request: web.Request) -> Principal:
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
        principal = await self.resolve(key)
        if principal is None:
            self.failures.check(client, now)     # counts it (admitted: hold just passed)
            raise ApiError(401, "unauthorized", "invalid API key (unknown, revoked or expired)",
                           {"WWW-Authenticate": "Bearer"})
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


def tenant_filter(request: web.Request, principal: Principal) -> str | None:
    """Which tenant's records a listing shows: the key's own; the platform admin's every
    tenant's (None) unless it names one with ``?tenant=ID`` (acting_tenant)."""
    if principal.is_admin and "tenant" not in request.query:
        return None
    return acting_tenant(request, principal)


def visible_tenant(principal: Principal, tenant_id: str) -> str:
    """TENANT_ID as a path names it, if the caller may see it: its own, or any for the
    platform admin; anything else is not found (404), as if it did not exist."""
    if not TENANT_ID_RE.match(tenant_id) or (not principal.is_admin and tenant_id != principal.tenant):
        raise ApiError(404, "not_found", f"no tenant {tenant_id[:40]!r}")
    return tenant_id


def function_name(principal: Principal, name: str, action: str) -> str:
    """The qualified name (tenants.model.qualify) of function NAME as PRINCIPAL addresses it,
    once its scope allows ACTION on it.  The platform admin names any tenant's function as
    TENANT.NAME (a bare name is the default tenant's); a tenant's key names its own functions
    bare, and anything else (another tenant's, a qualified name) is simply not found: a 404,
    never a 403 that would confirm it exists.  A key limited to named functions is refused
    others (403) before anything is looked up."""
    require(principal, action)
    if principal.is_admin:
        if not QUALIFIED_RE.match(name):
            raise ApiError(404, "not_found", f"no function named {name[:80]!r}")
        return name
    if not NAME_RE.match(name):
        raise ApiError(404, "not_found", f"no function named {name[:80]!r}")
    if principal.functions and name not in principal.functions:
        raise ApiError(403, "forbidden", f"this key is limited to the functions {', '.join(principal.functions)}")
    return qualify(principal.tenant, name)

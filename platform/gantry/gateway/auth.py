"""Bearer API keys -> principals.

Keys are never stored or logged: only their SHA-256 is kept and compared in constant time
(``hmac.compare_digest``).  Today the only principal is the admin (its key hash comes from the
settings or keys.ADMIN_KEY_HASH); tenant keys plug in as further lookups in ``resolve``.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from ..settings import hash_key
from .errors import ApiError

ADMIN_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    kind: str            # "admin" (later also "tenant")
    tenant: str          # sent to the function as X-Gantry-Tenant
    key_id: str          # what may appear in logs instead of the key

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


ADMIN = Principal(kind="admin", tenant=ADMIN_TENANT, key_id="admin")


class Authenticator:
    """Resolves a presented key to a principal.  ``admin_hash`` may change at run time (the
    cache refresh rereads it from Redis when the settings do not fix it)."""

    def __init__(self, admin_hash: str | None = None) -> None:
        self.admin_hash = admin_hash

    def resolve(self, key: str) -> Principal | None:
        digest = hash_key(key)
        admin = self.admin_hash
        if admin is not None and hmac.compare_digest(digest, admin):
            return ADMIN
        return None

    def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer KEY'",
                           {"WWW-Authenticate": "Bearer"})
        principal = self.resolve(key)
        if principal is None:
            raise ApiError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})
        return principal


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this operation needs the admin key")

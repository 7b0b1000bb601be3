"""API keys: how they look, how they are made and what a stored one says.

A key reads ``gk_<id>_<secret>``: ``id`` is 12 hex digits that name the key in listings,
logs and the audit stream (it is no secret), ``secret`` 32 random bytes in URL-safe base64
(256 bits).  Only the SHA-256 of the whole key is stored; a presented key is looked up by its
id and its hash compared with ``hmac.compare_digest``, so neither the lookup nor the compare
depends on the secret.  The key itself is shown once, by the call that made it.
"""
from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..settings import hash_key
from .model import SCOPE_ACTIONS, Scope, TenantError

KEY_PREFIX = "gk_"
KEY_RE = re.compile(r"^gk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
MAX_KEY_FUNCTIONS = 100
MAX_NOTE = 200
MAX_TTL = 10 * 365 * 86400.0


def new_key() -> tuple[str, str]:
    """(key id, the whole key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id a presented key claims, or None if it is not of our form (never raises)."""
    found = KEY_RE.match(key)
    return found.group(1) if found else None


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    scope: Scope
    hash: str
    functions: tuple[str, ...] = ()     # bare names the key is limited to; () for all
    created: float = 0.0
    expires: float = 0.0                # wall time; 0: never
    revoked: float = 0.0                # wall time; 0: live
    created_by: str = ""
    note: str = ""

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(hash_key(key), self.hash)

    def live(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return not self.revoked and (not self.expires or now < self.expires)

    def allows(self, action: str) -> bool:
        return action in SCOPE_ACTIONS[self.scope]

    def to_hash(self) -> dict[str, str]:
        out = {"id": self.id, "tenant": self.tenant, "scope": str(self.scope), "hash": self.hash,
               "functions": ",".join(self.functions), "created": repr(self.created),
               "expires": repr(self.expires), "created_by": self.created_by, "note": self.note}
        if self.revoked:
            out["revoked"] = repr(self.revoked)
        return out

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> "ApiKey":
        return cls(id=raw["id"], tenant=raw["tenant"], scope=Scope(raw["scope"]), hash=raw["hash"],
                   functions=tuple(f for f in raw.get("functions", "").split(",") if f),
                   created=float(raw.get("created") or 0), expires=float(raw.get("expires") or 0),
                   revoked=float(raw.get("revoked") or 0), created_by=raw.get("created_by", ""),
                   note=raw.get("note", ""))

    def to_dict(self) -> dict[str, Any]:
        """What the API shows of a key: never its hash."""
        return {"id": self.id, "tenant": self.tenant, "scope": str(self.scope),
                "functions": list(self.functions) or None, "created": self.created,
                "expires": self.expires or None, "revoked": self.revoked or None,
                "created_by": self.created_by, "note": self.note or None,
                "prefix": f"{KEY_PREFIX}{self.id}_"}


def parse_scope(value: Any) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise TenantError("scope", f"expected one of {', '.join(s.value for s in Scope)}, got {value!r:.40}") from None


def parse_ttl(value: Any) -> float:
    """A key's lifetime in seconds from a JSON number or a duration string ("30d"); 0: none."""
    from ..quantities import parse_duration
    if value is None:
        return 0.0
    try:
        ttl = parse_duration(value, most=MAX_TTL)
    except ValueError as exc:
        raise TenantError("ttl", str(exc)) from None
    return ttl

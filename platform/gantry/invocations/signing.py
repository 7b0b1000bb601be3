"""Callback signatures: how the gateway signs an async invocation's callback POST and how a
receiver checks it (docs/async.md).  Pure: no I/O, standard library only, so a
receiver written in Python may import or copy it.

The header ``X-Gantry-Signature: t=<unix seconds>,v1=<hex>`` carries the time of signing and
the HMAC-SHA256, under the tenant's signing secret, of ``"<t>." + body``.  Signing the time
with the body lets a receiver refuse a captured request replayed later (``tolerance``).  A
header may carry several ``v1=`` values (one per secret while a secret is being rotated); one
match is enough.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

HEADER = "X-Gantry-Signature"
INVOCATION_HEADER = "X-Gantry-Invocation-Id"
DELIVERY_HEADER = "X-Gantry-Delivery"      # the attempt number, 1 for the first POST
ALGORITHM = "HMAC-SHA256"
TOLERANCE = 300                            # seconds a receiver accepts between signing and now
DEFAULT_TENANT = "default"                 # gantry.manifest.DEFAULT_TENANT (not imported: stays standalone)


def digest(secret: bytes, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}."`` followed by BODY."""
    return hmac.new(secret, f"{int(timestamp)}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The X-Gantry-Signature value for BODY sent at TIMESTAMP (unix seconds)."""
    return f"t={int(timestamp)},v1={digest(secret, body, timestamp)}"


def parse(header: str) -> tuple[int, list[str]] | None:
    """(timestamp, the v1 signatures) of a header value; None when it has no usable t= or v1=.
    Unknown schemes (a later v2=) are skipped, so an old receiver keeps working."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            if not value.isascii() or not value.isdigit() or timestamp is not None:
                return None
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify(secret: bytes | Iterable[bytes], header: str, body: bytes, now: float,
           tolerance: float = TOLERANCE) -> bool:
    """Whether HEADER is a signature of BODY under SECRET (or any of several secrets, while a
    receiver rotates its own copy) made within TOLERANCE seconds of NOW, either side."""
    parsed = parse(header or "")
    if parsed is None:
        return False
    timestamp, signatures = parsed
    if abs(now - timestamp) > tolerance:
        return False
    secrets = [secret] if isinstance(secret, (bytes, bytearray)) else list(secret)
    ok = False
    for key in secrets:
        expected = digest(bytes(key), body, timestamp)
        for candidate in signatures:
            # every comparison runs (no early exit): the time taken says nothing about which matched
            ok |= hmac.compare_digest(expected.encode(), candidate.encode())
    return ok


def tenant_secret(platform_secret: bytes, tenant: str) -> bytes:
    """TENANT's signing secret.  Derived from the platform's rather than stored: nothing per
    tenant to keep, replicate or clean up; every gateway replica computes the same one; and
    rotating the platform secret rotates every tenant's with it.  One tenant's secret tells
    nothing about another's or the platform's (HMAC is one-way).  The default tenant (the
    single-tenant platform) signs with the platform secret itself."""
    if tenant == DEFAULT_TENANT:
        return platform_secret
    return hmac.new(platform_secret, b"tenant:" + tenant.encode(), hashlib.sha256).digest()

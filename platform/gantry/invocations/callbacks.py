"""Callbacks of async invocations: when an invocation with an ``X-Callback-Url`` settles, a
gateway POSTs its result there, signed (gantry.invocations.signing; docs/async.md).

Three parts, each beside the others but apart:

- ``CallbackStore``: the Redis side (keys.ASYNC_CALLBACK_CLAIM and _OUTCOME, the platform
  secret).  Any gateway may deliver any callback: due ids are claimed under a lease, so one
  whose deliverer stopped is taken up again by another, and outcomes are fenced.
- ``decide`` and friends: the pure policy.  A 2xx is delivered.  No connection, a connection
  that broke before any answer, a 5xx or a 429 is tried again with exponential backoff, up to
  MAX_ATTEMPTS POSTs in all.  A read timeout (the request went out, no answer came in time) is
  never tried again: the receiver may have acted on it, and a second POST could make it act
  twice.  Any other status (a 4xx, a redirect) is failed: sending the same again cannot help.
- ``Deliverer``: the loop a gateway runs (gantry.gateway.callbacks_api.callbacks_ctx).

A delivery is at least once when a gateway stops mid-POST (its lease ends and another sends
it again, ``X-Gantry-Delivery`` one higher): receivers should deduplicate by
``X-Gantry-Invocation-Id``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets as _random
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping
from urllib.parse import urlsplit

import aiohttp

from .. import keys
from ..cancellation import raise_if_cancelled
from ..store import ScriptRunner
from . import signing
from .model import Invocation, view

log = logging.getLogger("gantry.callbacks")

MAX_URL = 2048
MAX_ATTEMPTS = 8             # POSTs in all, the first included
BACKOFF_INITIAL = 1.0        # seconds before the first retry, doubled after each
BACKOFF_MAX = 300.0
CONNECT_TIMEOUT = 5.0        # seconds to connect; past it the receiver never saw the request: retried
READ_TIMEOUT = 10.0          # seconds for the answer once sent; past it: failed, never retried
LEASE = 60.0                 # seconds a claim holds a callback: well over one POST's timeouts
CONCURRENCY = 32             # POSTs in flight per gateway
POLL = 0.5                   # seconds between looks for due callbacks

SECRET_ENV = "GANTRY_CALLBACK_SECRET"
SECRET_FILE_ENV = "GANTRY_CALLBACK_SECRET_FILE"
MIN_SECRET = 32              # bytes (characters) a configured secret has at least


# --- the URL and the payload ----------------------------------------------------------------

def check_callback_url(url: str) -> str | None:
    """Why URL cannot be a callback URL, or None when it can: http or https, a host, at most
    MAX_URL characters, no credentials (the URL is shown in the invocation and its logs; the
    signature is how a receiver knows the POST is ours)."""
    if not url:
        return "X-Callback-Url: empty"
    if len(url) > MAX_URL:
        return f"X-Callback-Url: longer than {MAX_URL} characters"
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "X-Callback-Url: only printable ASCII, no spaces (percent-encode the rest)"
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"X-Callback-Url: not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "X-Callback-Url: must be an http:// or https:// URL"
    if not parts.hostname:
        return "X-Callback-Url: names no host"
    if parts.username is not None or parts.password is not None:
        return "X-Callback-Url: must not carry credentials (verify the X-Gantry-Signature header instead)"
    return None


def payload(inv: Invocation) -> dict[str, Any]:
    """The callback's body: the invocation as GET /v1/invocations/{id} shows it, without its
    ``callback`` part (which this very POST is changing)."""
    out = view(inv)
    out.pop("callback", None)
    return out


# --- the policy (pure) ----------------------------------------------------------------------

class Failure(StrEnum):
    """How a POST ended without an HTTP answer."""
    NONE = ""                     # it was answered (Outcome.status)
    CONNECT = "connect"           # no connection: refused, unresolvable, connect timeout
    BROKEN = "broken"             # the connection was reset or closed before any answer
    READ_TIMEOUT = "read_timeout"  # sent; no answer within READ_TIMEOUT
    REFUSED = "refused"           # not sent at all: something about the request itself


@dataclass(frozen=True)
class Outcome:
    """What one POST came to: the receiver's status, or how it failed (and why, in words)."""
    status: int | None = None
    failure: Failure = Failure.NONE
    detail: str = ""


class CallbackState(StrEnum):
    WAITING = "waiting"           # the invocation has not settled
    PENDING = "pending"           # due (now, or at callback_next for a retry)
    DELIVERING = "delivering"     # a POST is out
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    state: CallbackState          # DELIVERED, PENDING (try again at ``due``) or FAILED
    due: float | None = None
    error: str = ""


def backoff(attempt: int, initial: float = BACKOFF_INITIAL, most: float = BACKOFF_MAX) -> float:
    """Seconds between POST number ATTEMPT (1-based) and the next: INITIAL, doubling, at most MOST."""
    return min(most, initial * 2 ** max(0, attempt - 1))


def decide(outcome: Outcome, attempt: int, now: float, max_attempts: int = MAX_ATTEMPTS) -> Decision:
    """What POST number ATTEMPT's OUTCOME means for the callback."""
    if outcome.failure == Failure.NONE and outcome.status is not None:
        status = outcome.status
        if 200 <= status < 300:
            return Decision(CallbackState.DELIVERED)
        if status >= 500 or status == 429:
            retryable, error = True, f"the receiver answered {status}"
        elif 300 <= status < 400:
            retryable, error = False, f"the receiver answered {status}: redirects are not followed"
        else:
            retryable, error = False, f"the receiver answered {status}"
    elif outcome.failure == Failure.READ_TIMEOUT:
        return Decision(CallbackState.FAILED, error=f"{outcome.detail or 'no answer in time'}: not retried, "
                                                     "since the receiver may have acted on it")
    elif outcome.failure in (Failure.CONNECT, Failure.BROKEN):
        retryable, error = True, outcome.detail or str(outcome.failure)
    else:
        retryable, error = False, outcome.detail or "the request could not be sent"
    if retryable and attempt < max_attempts:
        return Decision(CallbackState.PENDING, due=now + backoff(attempt), error=error)
    if retryable:
        error = f"{error} (gave up after {attempt} attempts)"
    return Decision(CallbackState.FAILED, error=error)


# --- the store ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    """A callback this deliverer holds: its invocation, fencing token and attempt number."""
    invocation_id: str
    token: int
    attempt: int


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CallbackStore(ScriptRunner):

    async def claim(self, deliverer: str, limit: int, lease: float = LEASE, max_attempts: int = MAX_ATTEMPTS,
                    now: float | None = None) -> list[Claimed]:
        now = time.time() if now is None else now
        flat = await self._run(keys.ASYNC_CALLBACK_CLAIM, [keys.ASYNC_CALLBACKS], [
            repr(now), repr(now + lease), keys.INVOCATION_PREFIX, limit, deliverer, max_attempts])
        return [Claimed(_s(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def record(self, invocation_id: str, token: int, decision: Decision, status: int | None,
                     now: float | None = None) -> bool:
        """Store one POST's outcome; False when the claim was lost meanwhile (nothing written)."""
        now = time.time() if now is None else now
        return bool(await self._run(keys.ASYNC_CALLBACK_OUTCOME, [
            keys.invocation(invocation_id), keys.ASYNC_CALLBACKS],
            [token, decision.state.value, repr(now), repr(decision.due) if decision.due is not None else "",
             "" if status is None else status, decision.error]))

    async def invocation(self, invocation_id: str) -> Invocation | None:
        raw = await self.redis.hgetall(keys.invocation(invocation_id))
        return Invocation.from_hash(raw) if raw else None

    async def platform_secret(self) -> bytes:
        """The secret in Redis, made by whichever gateway asks first (SET NX: all agree)."""
        await self.redis.set(keys.CALLBACK_SECRET, _random.token_bytes(32), nx=True)
        value = await self.redis.get(keys.CALLBACK_SECRET)
        if not value:     # removed between the two calls: ask again next time
            raise RuntimeError("the callback signing secret vanished from Redis while being read")
        return value


# --- secrets ----------------------------------------------------------------------------------

class CallbackSecretError(ValueError):
    """GANTRY_CALLBACK_SECRET(_FILE) is set but unusable: the gateway does not start."""


def configured_secret(env: Mapping[str, str] | None = None) -> bytes | None:
    """The platform secret an operator set: GANTRY_CALLBACK_SECRET's text, or the file
    GANTRY_CALLBACK_SECRET_FILE's (surrounding whitespace dropped), as UTF-8 bytes; None when
    neither is set (the gateways then share one made in Redis)."""
    env = os.environ if env is None else env
    text, path = (env.get(SECRET_ENV) or "").strip(), (env.get(SECRET_FILE_ENV) or "").strip()
    if text and path:
        raise CallbackSecretError(f"set {SECRET_ENV} or {SECRET_FILE_ENV}, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CallbackSecretError(f"{SECRET_FILE_ENV}: cannot read {path}: {exc}") from None
        if not text:
            raise CallbackSecretError(f"{SECRET_FILE_ENV}: {path} is empty")
    if not text:
        return None
    secret = text.encode()
    if len(secret) < MIN_SECRET:
        raise CallbackSecretError(f"{SECRET_FILE_ENV if path else SECRET_ENV}: at least {MIN_SECRET} characters "
                                  "(for instance: openssl rand -hex 32)")
    return secret


class SigningSecrets:
    """The platform secret (configured, or Redis's, read once and kept) and each tenant's,
    derived from it (signing.tenant_secret)."""

    def __init__(self, store: CallbackStore, configured: bytes | None) -> None:
        self.store = store
        self._platform = configured

    async def platform(self) -> bytes:
        if self._platform is None:
            self._platform = await self.store.platform_secret()
        return self._platform

    async def for_tenant(self, tenant: str) -> bytes:
        return signing.tenant_secret(await self.platform(), tenant)


# --- delivery -----------------------------------------------------------------------------------

def new_session(concurrency: int = CONCURRENCY) -> aiohttp.ClientSession:
    """The deliverer's client: no pooled connections (a stale kept-alive one would fail a POST
    for nothing, and a broken one is retried), redirects never followed (see ``post``)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=concurrency),
                                 headers={"User-Agent": "gantry-callbacks/1"}, auto_decompress=False)


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str],
               connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT) -> Outcome:
    """One POST, classified.  The answer's body is never read: only its status counts."""
    # total: a receiver trickling its answer cannot hold the POST past it (counted as a read timeout)
    timeout = aiohttp.ClientTimeout(total=connect_timeout + 2 * read_timeout, connect=connect_timeout,
                                    sock_read=read_timeout)
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            return Outcome(status=resp.status)
    except aiohttp.ConnectionTimeoutError:
        return Outcome(failure=Failure.CONNECT, detail=f"could not connect within {connect_timeout:g}s")
    except asyncio.TimeoutError:       # aiohttp's read timeout (SocketTimeoutError), or the total
        return Outcome(failure=Failure.READ_TIMEOUT, detail=f"no answer within {read_timeout:g}s of sending")
    except aiohttp.ClientConnectorError as exc:
        return Outcome(failure=Failure.CONNECT, detail=f"could not connect: {exc.os_error or exc}")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
        return Outcome(failure=Failure.BROKEN, detail=f"the connection broke before an answer: {exc!r}")
    except (aiohttp.ClientError, ValueError) as exc:
        return Outcome(failure=Failure.REFUSED, detail=f"the request could not be sent: {exc!r}")


class Deliverer:
    """Claims due callbacks and POSTs them, CONCURRENCY at a time; ``run`` until cancelled.
    ``clock`` is wall time (stored times and signatures are unix seconds)."""

    def __init__(self, store: CallbackStore, secrets: SigningSecrets, session: aiohttp.ClientSession, *,
                 deliverer_id: str, concurrency: int = CONCURRENCY, poll: float = POLL, lease: float = LEASE,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.store, self.secrets, self.session = store, secrets, session
        self.deliverer_id = deliverer_id
        self.concurrency, self.poll, self.lease = concurrency, poll, lease
        self.connect_timeout, self.read_timeout, self.max_attempts = connect_timeout, read_timeout, max_attempts
        self.inflight: set[asyncio.Task] = set()

    async def pass_once(self) -> list[asyncio.Task]:
        """Claim as many due callbacks as there are free slots and start their POSTs."""
        free = self.concurrency - len(self.inflight)
        if free <= 0:
            return []
        claimed = await self.store.claim(self.deliverer_id, free, self.lease, self.max_attempts)
        started = []
        for c in claimed:
            task = asyncio.create_task(self.deliver(c), name="gantry-callback")
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
            started.append(task)
        return started

    async def deliver(self, claimed: Claimed) -> Decision | None:
        """POST one claimed callback and store the outcome; None when there was nothing to send
        or the claim was lost before the outcome could be stored."""
        try:
            inv = await self.store.invocation(claimed.invocation_id)
            if inv is None or inv.callback is None:
                return None       # expired meanwhile: the next claim drops the id
            body = json.dumps(payload(inv), ensure_ascii=False, separators=(",", ":")).encode()
            secret = await self.secrets.for_tenant(inv.tenant)
            headers = {"Content-Type": "application/json",
                       signing.HEADER: signing.sign(secret, body, int(time.time())),
                       signing.INVOCATION_HEADER: inv.id, signing.DELIVERY_HEADER: str(claimed.attempt)}
            outcome = await post(self.session, inv.callback["url"], body, headers, self.connect_timeout,
                                 self.read_timeout)
            decision = decide(outcome, claimed.attempt, time.time(), self.max_attempts)
            stored = await self.store.record(inv.id, claimed.token, decision, outcome.status)
            log.info("callback attempt", extra={"invocation": inv.id, "attempt": claimed.attempt,
                                                "status": outcome.status, "outcome": decision.state.value,
                                                "error": decision.error, "stored": stored})
            return decision if stored else None
        except asyncio.CancelledError:
            raise
        except Exception as exc:      # Redis away: the lease ends and a gateway tries again
            log.warning("callback delivery failed", extra={"invocation": claimed.invocation_id,
                                                           "error": repr(exc)})
            return None

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:      # Redis away: look again after the poll
                    log.warning("callback claim failed", extra={"error": repr(exc)})
                raise_if_cancelled()
                if len(self.inflight) >= self.concurrency:
                    # every slot taken: more may be due; look again as soon as one frees
                    await asyncio.wait(self.inflight, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(self.poll)
        finally:
            for task in list(self.inflight):
                task.cancel()     # their leases end and another gateway takes them up
            await asyncio.gather(*self.inflight, return_exceptions=True)

"""An async invocation's record and the pure decisions about it: what an attempt's answer
means (settle, retry or give up), how long to wait before a retry, and in which order a
dispatcher reads the three priorities.  No I/O here (gantry.invocations.store does it)."""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..manifest import AsyncPolicy


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


SETTLED = frozenset((State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED, State.EXPIRED))
PRIORITIES = ("high", "normal", "low")


def body_hash(body: bytes, content_type: str) -> str:
    """What an Idempotency-Key is bound to: the same key with another body is a conflict."""
    return hashlib.sha256(content_type.encode() + b"\0" + body).hexdigest()


def _text(raw: dict, name: str, default: str = "") -> str:
    value = raw.get(name.encode(), raw.get(name))
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(raw: dict, name: str) -> float | None:
    text = _text(raw, name)
    return float(text) if text else None


@dataclass
class Invocation:
    """A decoded invocation record (keys.invocation)."""
    id: str
    function: str
    tenant: str
    state: State
    priority: str = "normal"
    attempts: int = 0
    max_retries: int = 0
    created: float = 0.0
    updated: float = 0.0
    started: float | None = None
    finished: float | None = None
    next_at: float | None = None
    deadline: float = 0.0
    content_type: str = ""
    status: int | None = None
    result: bytes | None = None
    result_type: str = ""
    error_code: str = ""
    error: str = ""
    instance: str = ""
    source: str = "api"
    schedule: str = ""
    idempotency_key: str = ""
    body_hash: str = ""
    replays: int = 0
    callback: dict[str, Any] | None = None
    body: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_hash(cls, raw: dict) -> "Invocation":
        get = raw.get
        callback = None
        if _text(raw, "callback_url"):
            callback = {"url": _text(raw, "callback_url"), "state": _text(raw, "callback_state", "waiting"),
                        "attempts": int(_text(raw, "callback_attempts", "0")),
                        "error": _text(raw, "callback_error") or None,
                        "status": int(_text(raw, "callback_status")) if _text(raw, "callback_status") else None,
                        "delivered": _num(raw, "callback_delivered"), "next_at": _num(raw, "callback_next")}
        result = get(b"result", get("result"))
        body = get(b"body", get("body"))
        return cls(id=_text(raw, "id"), function=_text(raw, "function"), tenant=_text(raw, "tenant"),
                   state=State(_text(raw, "state")), priority=_text(raw, "priority", "normal"),
                   attempts=int(_text(raw, "attempts", "0")), max_retries=int(_text(raw, "max_retries", "0")),
                   created=_num(raw, "created") or 0.0, updated=_num(raw, "updated") or 0.0,
                   started=_num(raw, "started"), finished=_num(raw, "finished"), next_at=_num(raw, "next_at"),
                   deadline=_num(raw, "deadline") or 0.0, content_type=_text(raw, "content_type"),
                   status=int(_text(raw, "status")) if _text(raw, "status") else None,
                   result=result, result_type=_text(raw, "result_type"),
                   error_code=_text(raw, "error_code"), error=_text(raw, "error"), instance=_text(raw, "instance"),
                   source=_text(raw, "source", "api"), schedule=_text(raw, "schedule"),
                   idempotency_key=_text(raw, "idempotency_key"), body_hash=_text(raw, "body_hash"),
                   replays=int(_text(raw, "replays", "0")), callback=callback, body=body)

    def to_json(self, *, result: Any = None) -> dict[str, Any]:
        """The API's view (GET /v1/invocations/{id}); ``result`` is the decoded result."""
        out: dict[str, Any] = {
            "id": self.id, "function": self.function, "tenant": self.tenant, "state": str(self.state),
            "priority": self.priority, "attempts": self.attempts, "max_attempts": self.max_retries + 1,
            "created": self.created, "updated": self.updated, "started": self.started,
            "finished": self.finished, "source": self.source}
        if self.next_at is not None and self.state == State.RETRYING:
            out["next_attempt_at"] = self.next_at
        if self.schedule:
            out["schedule"] = self.schedule
        if self.idempotency_key:
            out["idempotency_key"] = self.idempotency_key
        if self.replays:
            out["replays"] = self.replays
        if self.status is not None:
            out["status"] = self.status
        if self.error_code:
            out["error"] = {"code": self.error_code, "message": self.error}
        if self.state in (State.SUCCEEDED, State.FAILED) and self.result is not None:
            out["result"] = result
            out["result_type"] = self.result_type
        if self.callback is not None:
            out["callback"] = self.callback
        return out


# --- decisions ----------------------------------------------------------------------------

class Verdict(StrEnum):
    SUCCEEDED = "succeeded"   # settle: a 2xx or 3xx
    FAILED = "failed"         # settle: a 4xx is the caller's problem; running it again cannot help
    RETRY = "retry"           # the function failed (error, timeout, crash, 5xx): try again if allowed


def verdict(status: int) -> Verdict:
    """What one attempt's HTTP status means for the invocation.  Every 5xx is retried (a
    function error is 500, a timeout 504, a crash 502, no capacity 503); no 4xx is."""
    if status < 400:
        return Verdict.SUCCEEDED
    if status < 500:
        return Verdict.FAILED
    return Verdict.RETRY


def retry_delay(policy: AsyncPolicy, attempts: int) -> float:
    """Seconds before the retry that follows attempt number ATTEMPTS (1-based): the initial
    backoff, doubled after each retry, at most the maximum."""
    return min(policy.backoff.max, policy.backoff.initial * 2 ** max(0, attempts - 1))


def may_retry(policy: AsyncPolicy, attempts: int, now: float, deadline: float, delay: float) -> bool:
    """Another attempt is allowed while retries remain and it would start before the deadline."""
    return attempts <= policy.max_retries and now + delay < deadline


# Of every 8 reads a dispatcher makes for a function, the first choice goes to high 5 times,
# normal twice and low once; the rest follow in priority order.  A busy high stream therefore
# cannot starve low work: low is read first at least once in every 8 reads.
_FIRST = ("high", "normal", "high", "low", "high", "normal", "high", "high")


def read_order(tick: int) -> tuple[str, ...]:
    """The priorities to read, in order, on a function's TICK-th read."""
    first = _FIRST[tick % len(_FIRST)]
    return (first,) + tuple(p for p in PRIORITIES if p != first)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def decoded_result(inv: Invocation) -> tuple[Any, str | None]:
    """(the result as a JSON value, its encoding): a JSON result as itself; text as a string;
    anything else (or text that is not UTF-8, JSON that does not parse) as base64 with the
    encoding "base64", for the view's ``result_encoding``.  (None, None) without a result."""
    raw = inv.result
    if raw is None:
        return None, None
    if _is_json(inv.result_type):
        try:
            return json.loads(raw), None
        except ValueError:
            pass
    elif inv.result_type.lower().startswith("text/"):
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    return base64.b64encode(raw).decode("ascii"), "base64"


def view(inv: Invocation) -> dict[str, Any]:
    """The API's and a callback's JSON of an invocation, its result decoded."""
    result, encoding = decoded_result(inv)
    out = inv.to_json(result=result)
    if encoding and "result" in out:
        out["result_encoding"] = encoding
    return out

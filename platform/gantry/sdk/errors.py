"""The SDK's exceptions: one class per family of the API's error codes, each carrying the
status, ``code`` and ``message`` of the answer (and ``details``: the error object's other
fields).  All are ``GantryError``, itself the CLI's ``gantry.client.APIError``, so the CLI
prints any of them as its one error line."""
from __future__ import annotations

import json
from typing import Any, Mapping

from .. import client as _cli
from ..client import APIError


class GantryError(APIError):
    """An error answer from the platform (status 0: no answer at all)."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, body: bytes = b""):
        super().__init__(status, code, message)
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        self.body = body          # the raw body (a function's own error answer may not be JSON)


class BadRequest(GantryError):
    """400 bad_request: the request itself is wrong (a field, a header, a payload)."""


class Unauthorized(GantryError):
    """401: no key, or a key the platform does not know (revoked, expired)."""


class Forbidden(GantryError):
    """403: the key may not do this."""


class QuotaExceeded(Forbidden):
    """403 quota_exceeded: the tenant's quota on ``resource`` is ``limit``; it uses ``current``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resource = self.details.get("resource")
        self.current = self.details.get("current")
        self.limit = self.details.get("limit")


class NotFound(GantryError):
    """404: no such function, invocation, tenant, key, secret or route."""


class Conflict(GantryError):
    """409: the thing is not in a state that allows this (not_settled, not_cancellable, ...)."""


class TooLarge(GantryError):
    """413 too_large: the body is over the limit."""


class IdempotencyConflict(GantryError):
    """422 idempotency_conflict: the Idempotency-Key was used with a different request."""


class RateLimited(GantryError):
    """429 rate_limited: ``retry_after`` seconds (from Retry-After; None if absent)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        raw = self.headers.get("Retry-After") or self.headers.get("retry-after")
        try:
            self.retry_after: float | None = float(raw) if raw is not None else None
        except ValueError:
            self.retry_after = None


class Unavailable(GantryError):
    """503 (unavailable, no_capacity, ...): the platform cannot serve it now; retry later."""


class Timeout(GantryError):
    """504 timeout: the function ran past its time limit (or the wait for an instance did)."""


class FunctionError(GantryError):
    """A 5xx that came from the function, not the platform: ``code`` says which (function_error:
    the handler raised; bad_result; function_crashed; function_outcome_unknown;
    function_start_failed; or http_<status> for a function's own non-JSON error answer)."""


class ConnectionFailed(GantryError):
    """No answer: the gateway cannot be reached (status 0, code unreachable)."""


class StreamError(GantryError, _cli.StreamError):
    """A streamed answer that failed after its headers: the status said success, so str()
    gives the code and message only (code stream_broken when it was cut off without a frame)."""


class WaitTimeout(GantryError):
    """What the SDK waited for (an invocation to settle, a deploy to take traffic) did not
    happen in time (status 0, code wait_timeout)."""


_BY_CODE: dict[str, type[GantryError]] = {
    "bad_request": BadRequest, "unauthorized": Unauthorized, "forbidden": Forbidden,
    "quota_exceeded": QuotaExceeded, "not_found": NotFound, "too_large": TooLarge,
    "idempotency_conflict": IdempotencyConflict, "rate_limited": RateLimited, "timeout": Timeout,
    "unavailable": Unavailable, "no_capacity": Unavailable, "secrets_unavailable": Unavailable,
    "at_capacity": Unavailable, "starting": Unavailable, "draining": Unavailable,
    "function_error": FunctionError, "bad_result": FunctionError, "function_crashed": FunctionError,
    "function_outcome_unknown": FunctionError, "function_start_failed": FunctionError,
}
_BY_STATUS: dict[int, type[GantryError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    422: IdempotencyConflict, 429: RateLimited, 503: Unavailable, 504: Timeout}


def error_for(status: int, body: bytes, headers: Mapping[str, str] | None = None,
              from_function: bool = False) -> GantryError:
    """The exception for an error answer: by its code, else by its status.  FROM_FUNCTION:
    the answer carries an invocation id (a function's own answer), so a 5xx whose body is not
    the platform's error JSON is a FunctionError."""
    code, message, details = f"http_{status}", body[:500].decode(errors="replace"), {}
    try:
        err = json.loads(body)["error"]
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            code, message = err["code"], str(err.get("message", ""))
            details = {k: v for k, v in err.items() if k not in ("code", "message")}
    except (ValueError, KeyError, TypeError):
        pass
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = FunctionError if status >= 500 and from_function else _BY_STATUS.get(status, GantryError)
    return cls(status, code, message or code, details, headers, body)

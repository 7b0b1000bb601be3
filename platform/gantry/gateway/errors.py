"""Every error the gateway answers is JSON ``{"error": {"code", "message"}}`` (the body the
runtime sends too: gantry_runtime.wire) with the status and code of the table in
docs/architecture.md ("Errors"); the middleware here makes sure nothing else (an HTML page,
a traceback) escapes."""
from __future__ import annotations

import logging

from aiohttp import web
from gantry_runtime.wire import ERROR_CONTENT_TYPE, ErrorCode, error_body

from ..store import UNAVAILABLE
from ..tenants.quota import QuotaExceeded

log = logging.getLogger("gantry.gateway")

# aiohttp's own HTTP exceptions (no route, wrong method, body too large) -> our codes
_CODES = {400: ErrorCode.BAD_REQUEST, 401: "unauthorized", 403: "forbidden", 404: ErrorCode.NOT_FOUND,
          405: "method_not_allowed", 413: ErrorCode.TOO_LARGE, 429: "rate_limited",
          502: "function_crashed", 503: "no_capacity", 504: ErrorCode.TIMEOUT}


class ApiError(Exception):
    """Raised by handlers; the middleware answers it as a JSON error."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.details = details or {}     # more fields of the error object (a quota's resource...)


def quota_error(exc: QuotaExceeded, headers: dict[str, str] | None = None) -> ApiError:
    """403 quota_exceeded naming the resource, the current use and the limit."""
    return ApiError(403, "quota_exceeded", str(exc), headers, exc.details())


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
               details: dict | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(code, message, **(details or {})), headers=headers,
                        content_type=ERROR_CONTENT_TYPE)


def answer_exception(exc: Exception, method: str, path: str) -> web.Response:
    """The JSON answer to an exception a handler raised (never a traceback; an unexpected one
    is logged with its own)."""
    if isinstance(exc, ApiError):
        return json_error(exc.status, exc.code, exc.message, exc.headers, exc.details)
    if isinstance(exc, QuotaExceeded):     # a deploy (Store.deploy_version) over the functions quota
        err = quota_error(exc)
        return json_error(err.status, err.code, err.message, None, err.details)
    if isinstance(exc, web.HTTPException):
        code = _CODES.get(exc.status, "internal" if exc.status >= 500 else ErrorCode.BAD_REQUEST)
        message = exc.reason
        if exc.status == 404:
            message = f"no route {method} {path}"
        elif exc.status == 405:
            message = f"{method} is not allowed on {path}"
        elif exc.status == 413:
            message = "request body too large"
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return json_error(exc.status, code, message, headers or None)
    if isinstance(exc, UNAVAILABLE):       # Redis is down or slow: the caller may retry, it is not our bug
        log.warning("redis unavailable", extra={"method": method, "path": path, "error": repr(exc)})
        return json_error(503, "unavailable", "the gateway cannot reach its state store (Redis); retry shortly",
                          {"Retry-After": "1"})
    log.error("unhandled error", extra={"method": method, "path": path}, exc_info=exc)
    return json_error(500, "internal", "internal error in the gateway")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        return answer_exception(exc, request.method, request.path)
    except Exception as exc:
        return answer_exception(exc, request.method, request.path)

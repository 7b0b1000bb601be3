"""The contract between the gateway and the runtime, written once: header names, the timeout
header, the JSON error body and its codes, and the handler spec.

Both sides import this module: the runtime inside the container (which cannot import
``gantry``), the gateway and the manifest on the host. It uses the standard library only.
"""
from __future__ import annotations

import json
import math
import os
import re
from enum import StrEnum
from typing import NamedTuple

try:    # hmac.compare_digest without importing hmac, which loads OpenSSL (_hashlib) at the
    # runtime's start for nothing else; hmac itself falls back to this very function
    from _operator import _compare_digest as compare_digest
except ImportError:  # pragma: no cover - another Python
    from hmac import compare_digest

# -- headers ---------------------------------------------------------------------------------

HEADER_PREFIX = "x-gantry-"               # lower-case: the gateway passes these back to callers
INVOCATION_ID = "X-Gantry-Invocation-Id"  # both ways: the gateway's id, echoed by the runtime
TENANT = "X-Gantry-Tenant"                # gateway -> runtime: the caller's tenant
TIMEOUT = "X-Gantry-Timeout"              # caller -> gateway -> runtime: seconds; may only lower the limit
DURATION_MS = "X-Gantry-Duration-Ms"      # runtime -> caller: time spent in the runtime
STREAM = "X-Gantry-Stream"                # runtime -> caller: "1" when the body is a stream
INSTANCE_KEY = "X-Gantry-Instance-Key"    # gateway -> runtime only: the instance's secret (never to callers)
# gateway -> runtime: an async invocation's attempt number.  The runtime keeps that attempt's
# outcome by (invocation id, attempt), so asking again joins it instead of running it twice.
ATTEMPT = "X-Gantry-Attempt"
ATTACHED = "X-Gantry-Attached"            # runtime -> gateway: "1" when the answer joined an earlier run
# W3C Trace Context (docs/tracing.md): the gateway sends the runtime a ``traceparent`` whose
# parent is its forward span; the runtime answers with SPAN, its handler span as it measured
# it, which the gateway records as the forward span's child (no OpenTelemetry in the image).
TRACEPARENT = "traceparent"
SPAN = "X-Gantry-Span"                    # runtime -> gateway: "SPAN_ID;START_UNIX_NS;DURATION_NS"

# Hop-by-hop headers (RFC 9110 7.6.1) and the body's framing: each HTTP hop sets its own, so
# neither a handler's Response nor an instance's answer may carry them to the caller.
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"))
FRAMING = frozenset(("content-length", "transfer-encoding"))

# The per-instance secret: the worker makes one at start (``new_instance_key``), hands it to
# the runtime in this environment variable and to the gateway in the instance record; the
# runtime answers /invoke only to requests that carry it in INSTANCE_KEY.
INSTANCE_KEY_ENV = "GANTRY_INSTANCE_KEY"


def new_instance_key() -> str:
    """A fresh instance key: 32 random bytes, URL-safe base64 (43 characters)."""
    import secrets   # here, not at the top: the runtime never makes one (and hmac is slow to import)
    return secrets.token_urlsafe(32)


def key_matches(expected: str, given: str | None) -> bool:
    """Whether ``given`` is the instance key, compared in constant time."""
    return given is not None and compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


class BadTimeout(ValueError):
    """An ``X-Gantry-Timeout`` that is not a positive, finite number; answered 400 bad_request."""


def parse_timeout(raw: str | None) -> float | None:
    """Seconds from an ``X-Gantry-Timeout`` value; None when absent or empty."""
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise BadTimeout(f"{TIMEOUT} must be a positive number of seconds, got {raw!r}")
    return seconds


def format_timeout(seconds: float) -> str:
    return f"{seconds:g}"


# -- trace context ---------------------------------------------------------------------------

class TraceParent(NamedTuple):
    trace_id: str   # 32 lower-case hex digits, not all zero
    parent_id: str  # 16 lower-case hex digits, not all zero: the caller's span
    flags: int      # bit 0: sampled


_HEX = frozenset("0123456789abcdef")


def _hex(s: str, n: int) -> bool:
    return len(s) == n and _HEX.issuperset(s) and s != "0" * n


def parse_traceparent(raw: str | None) -> TraceParent | None:
    """A W3C ``traceparent`` (``00-TRACE_ID-PARENT_ID-FLAGS``); None when absent or invalid
    (then the invocation has no trace, as the spec says a receiver must treat it).  A version
    above 00 is read by its first four fields; version ff is invalid."""
    if not raw or len(raw) < 55:
        return None
    version = raw[:2]
    if not _HEX.issuperset(version) or version == "ff":
        return None
    if len(raw) > 55 and (version == "00" or raw[55] != "-"):
        return None
    if raw[2] != "-" or raw[35] != "-" or raw[52] != "-":
        return None
    trace_id, parent_id, flags = raw[3:35], raw[36:52], raw[53:55]
    if not (_hex(trace_id, 32) and _hex(parent_id, 16) and len(flags) == 2 and _HEX.issuperset(flags)):
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def format_traceparent(trace_id: str, span_id: str, flags: int) -> str:
    return f"00-{trace_id}-{span_id}-{flags & 0xff:02x}"


def new_span_id() -> str:
    """16 random hex digits, never all zero."""
    while True:
        span_id = os.urandom(8).hex()   # what secrets.token_hex(8) does
        if span_id != "0" * 16:
            return span_id


class SpanReport(NamedTuple):
    span_id: str
    start_ns: int            # Unix epoch nanoseconds, the runtime's clock
    duration_ns: int | None  # None: a stream (its headers went before it ended)


def format_span(span_id: str, start_ns: int, duration_ns: int | None) -> str:
    return f"{span_id};{start_ns};{'' if duration_ns is None else duration_ns}"


def parse_span(raw: str | None) -> SpanReport | None:
    """A SPAN header; None when absent or malformed."""
    if not raw:
        return None
    parts = raw.split(";")
    if (len(parts) != 3 or not raw.isascii() or not _hex(parts[0], 16) or not parts[1].isdigit()
            or (parts[2] and not parts[2].isdigit())):
        return None
    return SpanReport(parts[0], int(parts[1]), int(parts[2]) if parts[2] else None)


# -- errors ----------------------------------------------------------------------------------

class ErrorCode(StrEnum):
    """``error.code`` values that both sides send or act on."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    FUNCTION_ERROR = "function_error"   # the handler raised
    BAD_RESULT = "bad_result"           # the handler returned something the runtime cannot send
    # 503s of the runtime that the gateway retries on another instance
    AT_CAPACITY = "at_capacity"
    STARTING = "starting"
    DRAINING = "draining"
    FORBIDDEN = "forbidden"             # an /invoke without this instance's key
    # the gateway's 502 when an instance broke off after the request was sent: the function
    # may have run once, and the gateway did not retry it (the runtime never sends this)
    FUNCTION_OUTCOME_UNKNOWN = "function_outcome_unknown"
    # the gateway's 502 to a request waiting for an instance of a version whose last start
    # failed (the handler did not import, the container exited before it was ready): the
    # message carries the cause, so the caller need not wait out the cold-start timeout
    FUNCTION_START_FAILED = "function_start_failed"


# The runtime's structured start-failure line: when it cannot start (a bad configuration,
# a handler that does not import) it logs one JSON line with ``"event"`` set to one of these
# and ``"error"`` the cause in one line (``main.py:3: KeyError: 'DATABASE_URL'``); the worker
# reads it from the container's log when the container exits before it was ready.
class StartFailure(StrEnum):
    BAD_CONFIG = "bad_config"
    IMPORT_FAILED = "import_failed"
    SECRETS = "secrets_unreadable"      # a secret file the worker should have written is missing


ERROR_CONTENT_TYPE = "application/json"


def error_body(code: str, message: str, **details) -> bytes:
    """``{"error": {"code": ..., "message": ..., **details}}``, compact UTF-8 JSON (details:
    what a client may act on, e.g. a quota's resource, current use and limit)."""
    return json.dumps({"error": {**details, "code": str(code), "message": message}},
                      ensure_ascii=False, separators=(",", ":")).encode()


def parse_error(body: bytes | str) -> tuple[str, str] | None:
    """(code, message) from an error body; None when the body is not one."""
    try:
        err = json.loads(body)["error"]
        code, message = err["code"], err.get("message", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return (code, message) if isinstance(code, str) and isinstance(message, str) else None


# -- a stream that fails after its headers were sent -----------------------------------------
# The status is gone, so the runtime says what went wrong in the body, as the stream's last
# bytes, and then closes the connection without the terminating chunk (a truncated body: curl
# exits 18, so no client mistakes it for a success).  Both frames are written here and read
# back here (by the CLI); docs/runtime.md, "Streams", shows them.

STREAM_ERROR_MARK = b"\x1e"   # ASCII Record Separator (as in RFC 7464 JSON text sequences)


def stream_error_frame(code: str, message: str) -> bytes:
    """A plain stream's last line: RS, the error body, LF.  The runtime writes a LF before it
    when the stream's last byte was not one, so the frame always starts a line."""
    return STREAM_ERROR_MARK + error_body(code, message) + b"\n"


def parse_stream_error(tail: bytes) -> tuple[str, str] | None:
    """(code, message) when ``tail`` is exactly one ``stream_error_frame``; else None."""
    if not (tail.startswith(STREAM_ERROR_MARK) and tail.endswith(b"\n")) or tail.count(b"\n") != 1:
        return None
    return parse_error(tail[1:-1])


EVENT_STREAM = "text/event-stream"
SSE_ERROR_EVENT = b"event: error\n"   # a Server-Sent Events stream's last event when it fails


def sse_error_event(code: str, message: str) -> bytes:
    """``event: error`` with ``data: {"code": ..., "message": ...}`` (one line of JSON)."""
    data = json.dumps({"code": str(code), "message": message}, ensure_ascii=False, separators=(",", ":"))
    return SSE_ERROR_EVENT + b"data: " + data.encode() + b"\n\n"


def parse_sse_error(tail: bytes) -> tuple[str, str] | None:
    """(code, message) when ``tail`` is exactly one ``sse_error_event``; else None."""
    if not (tail.startswith(SSE_ERROR_EVENT) and tail.endswith(b"\n\n")) or tail.count(b"\n") != 3:
        return None
    data = tail[len(SSE_ERROR_EVENT):-2]
    if not data.startswith(b"data: "):
        return None
    try:
        err = json.loads(data[6:])
    except ValueError:
        return None
    if isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str):
        return err["code"], err["message"]
    return None


# -- the ready report ------------------------------------------------------------------------
# The runtime tells the worker it is ready with a log line: the moment the handler is imported
# (/healthz then answers 200) it writes {"msg": "ready", "logger": "gantry.runtime", ...} on
# stdout, and the worker, which follows every container's log stream anyway, probes at once
# instead of at its next tick.  The line only wakes the probe: the probe still decides, so a
# handler that prints such a line can at most cost its own instance one probe.

RUNTIME_LOGGER = "gantry.runtime"
READY_MSG = "ready"


def is_ready_line(line: str) -> bool:
    """Whether LINE (one line of a container's stdout) is the runtime's ready line."""
    if '"ready"' not in line or not line.startswith("{"):   # most lines: no JSON decoding
        return False
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("msg") == READY_MSG and entry.get("logger") == RUNTIME_LOGGER


# -- handler spec ----------------------------------------------------------------------------

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
HANDLER_RE = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
HANDLER_EXPECTED = '"module:callable" such as "main:handle" (the callable may be dotted: "main:App.handle")'


class Handler(NamedTuple):
    module: str   # "pkg.mod", imported
    attr: str     # "obj.method", looked up part by part on the module


def parse_handler(spec: str) -> Handler:
    """Split a handler spec; ValueError naming the expected form when it is not one."""
    if not isinstance(spec, str) or not HANDLER_RE.match(spec):
        raise ValueError(f"expected {HANDLER_EXPECTED}, got {spec!r}")
    module, _, attr = spec.partition(":")
    return Handler(module, attr)

"""The ``ctx`` object handed to every handler call."""
from __future__ import annotations

import logging
import time


class Context:
    """What a handler knows about its invocation.

    ``deadline`` is epoch seconds (``time.time()`` based); ``remaining()`` the seconds left,
    never negative. ``logger`` writes JSON lines that carry ``invocation_id``.  ``coord`` is
    the coordination client (locks, state, queues, services: gantry_runtime.coord) of the
    function's namespace, ``acoord`` its asyncio twin for ``async def`` handlers; both are
    made once per instance from the credential the worker gave it.

    ``trace_id`` (32 hex digits) and ``span_id`` (16) name the invocation's trace and the
    handler's own span in it (docs/tracing.md); both None when the request carried no valid
    W3C ``traceparent``.
    """

    __slots__ = ("invocation_id", "tenant", "function", "deadline", "logger", "trace_id", "span_id")

    def __init__(self, invocation_id: str, tenant: str | None, function: str, deadline: float,
                 logger: logging.LoggerAdapter, trace_id: str | None = None, span_id: str | None = None) -> None:
        self.invocation_id = invocation_id
        self.tenant = tenant
        self.function = function
        self.deadline = deadline
        self.logger = logger
        self.trace_id = trace_id
        self.span_id = span_id

    @property
    def coord(self):
        from .coord import from_env
        return from_env("sync")

    @property
    def acoord(self):
        from .coord import from_env
        return from_env("async")

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())

    def __repr__(self) -> str:
        return (f"Context(invocation_id={self.invocation_id!r}, tenant={self.tenant!r}, "
                f"function={self.function!r}, remaining={self.remaining():.3f})")

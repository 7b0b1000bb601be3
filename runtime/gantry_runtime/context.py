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
    """

    __slots__ = ("invocation_id", "tenant", "function", "deadline", "logger")

    def __init__(self, invocation_id: str, tenant: str | None, function: str, deadline: float,
                 logger: logging.LoggerAdapter) -> None:
        self.invocation_id = invocation_id
        self.tenant = tenant
        self.function = function
        self.deadline = deadline
        self.logger = logger

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

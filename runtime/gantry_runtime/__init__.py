"""gantry_runtime: the in-container server that runs one function's handler.

Run as ``python3 -m gantry_runtime``. It imports nothing heavy at package import so that
``import gantry_runtime`` stays cheap; the server modules load in ``__main__``. A handler
imports what it may return from here: ``from gantry_runtime import Response, SSE, Event, sse``
(the standard library only).
"""

from .response import SSE, Event, Response, sse

__version__ = "0.1.0"
__all__ = ["Event", "Response", "SSE", "sse"]

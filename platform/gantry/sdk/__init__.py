"""The Gantry SDK: ``gantry.Client`` (synchronous, standard library) and ``gantry.AsyncClient``
(asyncio, aiohttp) over the platform's HTTP API, typed records (gantry.sdk.types) and one
exception class per family of error codes (gantry.sdk.errors).  docs/sdk.md is the guide."""
from .aio import AsyncClient
from .errors import (BadRequest, Conflict, ConnectionFailed, Forbidden, FunctionError, GantryError,
                     IdempotencyConflict, NotFound, QuotaExceeded, RateLimited, StreamError, Timeout, TooLarge,
                     Unauthorized, Unavailable, WaitTimeout)
from .sync import Client
from .types import Deployment, InvokeResult, LogEntry

__all__ = ["AsyncClient", "BadRequest", "Client", "Conflict", "ConnectionFailed", "Deployment", "Forbidden",
           "FunctionError", "GantryError", "IdempotencyConflict", "InvokeResult", "LogEntry", "NotFound",
           "QuotaExceeded", "RateLimited", "StreamError", "Timeout", "TooLarge", "Unauthorized", "Unavailable",
           "WaitTimeout"]

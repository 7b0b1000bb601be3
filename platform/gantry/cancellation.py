"""Cancellation that a library swallowed, raised again."""
from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled but a library swallowed it: seen with
    redis.asyncio (8.1) when the cancel lands while it opens a connection.  A loop or a
    request must still end when cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()

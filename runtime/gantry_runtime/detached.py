"""Async attempts, kept by (invocation id, attempt) so that asking again never runs twice.

The gateway's dispatcher sends an async invocation with its attempt number (wire.ATTEMPT).
The attempt runs in a task of its own, not in the request's: when the dispatcher's
connection drops (it crashed, or was killed), the work goes on, and its outcome is kept a
while.  The dispatcher that takes the invocation over sends the same attempt to the same
instance and gets that outcome, joining the run if it is still going.  A second execution
therefore happens only when the instance itself is gone.

Only a whole response is kept: a streamed answer went to the first connection as it was
made and cannot be told again (the dispatcher then reports the outcome as unknown).
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Awaitable, Callable, NamedTuple

from .httpserver import Headers, Response, StreamResponse, error_response
from .wire import ATTACHED, ErrorCode

KEEP = 900.0                 # seconds an outcome is kept for a dispatcher to ask again
MAX_BYTES = 64 * 2**20       # outcome bodies kept in all; the oldest go first
MAX_KEPT = 4096


class Outcome(NamedTuple):
    status: int
    headers: Headers
    body: bytes | None        # None: the answer was streamed and cannot be told again
    at: float


def _outcome(resp: Response | StreamResponse) -> Outcome:
    body = None
    if isinstance(resp, Response):
        raw = resp.body
        body = bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else b""
    return Outcome(resp.status, Headers(resp.headers), body, time.monotonic())


class Detached:
    def __init__(self) -> None:
        self.running: dict[tuple[str, str], asyncio.Task] = {}
        self.kept: OrderedDict[tuple[str, str], Outcome] = OrderedDict()
        self.kept_bytes = 0
        self.joined = 0            # answers that joined an earlier run (tests and /healthz read it)

    async def serve(self, key: tuple[str, str], run: Callable[[], Awaitable[Response | StreamResponse]]
                    ) -> Response | StreamResponse:
        self._expire(time.monotonic())
        known = self.kept.get(key)
        if known is not None:
            return self._again(known)
        task = self.running.get(key)
        if task is not None:
            await asyncio.shield(task)
            return self._again(self.kept.get(key) or _outcome(task.result()))
        task = asyncio.get_running_loop().create_task(run())
        self.running[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task)

    def _finished(self, key: tuple[str, str], task: asyncio.Task) -> None:
        self.running.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        out = _outcome(task.result())
        if out.status == 503:      # at capacity, draining, starting: it never ran; ask again later
            return
        self.kept[key] = out
        self.kept_bytes += len(out.body or b"")
        while self.kept and (len(self.kept) > MAX_KEPT or self.kept_bytes > MAX_BYTES):
            self._drop_oldest()

    def _expire(self, now: float) -> None:
        while self.kept and now - next(iter(self.kept.values())).at > KEEP:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, out = self.kept.popitem(last=False)
        self.kept_bytes -= len(out.body or b"")

    def _again(self, out: Outcome) -> Response | StreamResponse:
        self.joined += 1
        if out.body is None:
            return error_response(502, ErrorCode.FUNCTION_OUTCOME_UNKNOWN,
                                  "this attempt's answer was streamed to a connection that is gone; "
                                  "it cannot be told again", {ATTACHED: "1"})
        headers = Headers(out.headers)
        headers[ATTACHED] = "1"
        for name in ("Content-Length", "Transfer-Encoding"):
            headers.popall(name, None)
        return Response(status=out.status, body=out.body, headers=headers)

"""Calling the handler: admission, timeouts, threads, results and streams over HTTP.

Concurrency is a counter of *slots*, not a queue: an invocation that finds every slot held is
answered 503 at once. A slot is held until the work it started has really stopped. Async
work is cancelled on timeout or client disconnect, so it stops at once; a sync handler runs
in a thread that cannot be killed, so its slot stays held (and counts as ``stuck``) until
the thread returns. The thread pool has one thread per slot, so it never queues either.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from .context import Context
from . import wire
from .encode import (BINARY, BadResult, content_type_header, encode_body, encode_item, encode_result,
                     sse_event, stream_content_type)
from .httpserver import Headers, Request, Response as HttpResponse, StreamResponse, TooLarge
from .httpserver import error_response
from .logs import FUNCTION_LOGGER, InvocationLogger
from .response import SSE, Response
from .wire import DURATION_MS, INVOCATION_ID, STREAM, ErrorCode

END = object()  # a generator's end, as a value (StopIteration cannot cross a Future)


def _next(gen: Any) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return END


def _quietly(fn: Callable[[], Any], log: logging.Logger) -> None:
    try:
        fn()
    except Exception:
        log.warning("closing a generator failed", exc_info=True)


__all__ = ["Invoker", "Slot", "error_response"]


class _ClientGone(Exception):
    """The client went away while we wrote to it."""


class Slot:
    """One admitted invocation's hold on the concurrency budget."""

    __slots__ = ("_inv", "_cf", "_released")

    def __init__(self, invoker: "Invoker") -> None:
        self._inv = invoker
        self._cf: Future | None = None
        self._released = False

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in the handler pool. Cancelling the await leaves the thread running."""
        cf = self._inv.pool.submit(fn, *args)
        self._cf = cf
        return await asyncio.wrap_future(cf)

    def release(self, cleanup: Callable[[], Any] | None = None) -> None:
        """Give the slot back once no thread of ours is running; ``cleanup`` (closing a sync
        generator) runs in a thread first, after any step still running."""
        if self._released:
            return
        self._released = True
        inv, cf = self._inv, self._cf
        if cf is not None and not cf.done():
            inv.stuck += 1

            def later(_: Future) -> None:
                if cleanup is not None:
                    _quietly(cleanup, inv.log)
                inv.release_threadsafe(stuck=True)

            cf.add_done_callback(later)
        elif cleanup is not None:
            done = inv.pool.submit(_quietly, cleanup, inv.log)
            done.add_done_callback(lambda _: inv.release_threadsafe(stuck=False))
        else:
            inv.release(stuck=False)


class _Outcome:
    __slots__ = ("status", "code", "resp", "chunks", "aborted", "sse", "at_line_start")

    def __init__(self) -> None:
        self.status = 200
        self.resp: StreamResponse | None = None  # set once stream headers are sent
        self.code: str | None = None
        self.chunks = 0
        self.aborted = False
        self.sse = False            # the stream is Server-Sent Events
        self.at_line_start = True   # the last byte streamed was a LF (or none was streamed)


class Invoker:
    """Serves ``POST /invoke`` for one loaded handler. Create it inside the running loop."""

    def __init__(self, handler: Callable[..., Any], *, function: str, concurrency: int,
                 timeout: float, max_body: int, log: logging.Logger) -> None:
        self.handler = handler
        self.function = function
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_body = max_body
        self.log = log
        self.fn_log = logging.getLogger(FUNCTION_LOGGER)
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="gantry-handler")
        self.inflight = 0   # slots held, including those of stuck threads
        self.stuck = 0      # threads still running for invocations that already ended
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        call = getattr(handler, "__call__", None)
        self._is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
        self._is_gen = inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(handler)

    # -- slots -------------------------------------------------------------------------------

    def admit(self) -> Slot | None:
        if self.inflight >= self.concurrency:
            return None
        self.inflight += 1
        self._idle.clear()
        return Slot(self)

    def release(self, stuck: bool) -> None:
        self.inflight -= 1
        if stuck:
            self.stuck -= 1
        if self.inflight == 0:
            self._idle.set()

    def release_threadsafe(self, stuck: bool) -> None:
        try:
            self._loop.call_soon_threadsafe(self.release, stuck)
        except RuntimeError:  # the loop is closed: the process is exiting anyway
            pass

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no slot is held; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- HTTP --------------------------------------------------------------------------------

    async def handle(self, request: Request) -> StreamResponse | HttpResponse:
        t0 = time.monotonic()
        inv_id = request.headers.get(INVOCATION_ID) or ""
        if not inv_id or len(inv_id) > 128 or not inv_id.isprintable():
            import uuid   # only here: the gateway always sends an id, and uuid is slow to import
            inv_id = uuid.uuid4().hex
        headers = {INVOCATION_ID: inv_id}
        tenant = request.headers.get(wire.TENANT) or None
        fields = {"invocation_id": inv_id, "tenant": tenant}
        trace = span_id = None
        if wire.TRACEPARENT in request.headers:
            trace = wire.parse_traceparent(request.headers[wire.TRACEPARENT])
            if trace is not None:
                span_id = wire.new_span_id()   # the handler's, for its own calls' traceparent
                if trace.flags & 1:   # sampled: its span's report, its start now, its duration when it ends
                    headers[wire.SPAN] = wire.format_span(span_id, time.time_ns(), None)
                fields["trace_id"] = trace.trace_id

        def fail(status: int, code: str, message: str, **extra_headers: str) -> HttpResponse:
            _timed(headers, t0)
            self.log.info("invoke", extra={**fields, "status": status, "code": code,
                                           "duration_ms": round(float(headers[DURATION_MS]), 3)})
            return error_response(status, code, message, {**headers, **extra_headers})

        try:
            asked = wire.parse_timeout(request.headers.get(wire.TIMEOUT))
        except wire.BadTimeout as exc:
            return fail(400, ErrorCode.BAD_REQUEST, str(exc))
        timeout = self.timeout if asked is None else min(self.timeout, asked)
        if request.content_length is not None and request.content_length > self.max_body:
            return fail(413, ErrorCode.TOO_LARGE, f"request body exceeds {self.max_body} bytes")
        slot = self.admit()
        if slot is None:
            return fail(503, ErrorCode.AT_CAPACITY, f"all {self.concurrency} slots are busy",
                        **{"Retry-After": "1"})
        released = False
        try:
            try:
                body = await request.read()
            except TooLarge:
                return fail(413, ErrorCode.TOO_LARGE, f"request body exceeds {self.max_body} bytes")
            if request.content_type == "application/json" or request.content_type.endswith("+json"):
                try:
                    event: Any = json.loads(body) if body else None
                except ValueError as exc:
                    return fail(400, ErrorCode.BAD_REQUEST, f"invalid JSON body: {exc}")
                except RecursionError:
                    return fail(400, ErrorCode.BAD_REQUEST, "invalid JSON body: nested too deeply")
            else:
                event = body
            ctx = Context(inv_id, tenant, self.function, time.time() + timeout - (time.monotonic() - t0),
                          InvocationLogger(self.fn_log, fields), trace and trace.trace_id, span_id)
            released = True  # from here on, run() owns the slot
            return await self.run(request, event, ctx, slot, ctx.remaining(), headers, fields, t0)
        finally:
            if not released:
                slot.release()

    async def run(self, request: Request, event: Any, ctx: Context, slot: Slot, timeout: float,
                  headers: dict[str, str], fields: dict[str, Any], t0: float) -> StreamResponse | HttpResponse:
        out = _Outcome()
        gen: Any = None
        tm = asyncio.timeout(timeout)
        try:
            async with tm:
                result = await self._call(event, ctx, slot)
                reply = result if isinstance(result, Response) else None
                if reply is not None:
                    result = reply.body
                if inspect.isasyncgen(result) or inspect.isgenerator(result):
                    gen = result
                    return await self._stream(request, gen, slot, headers, out, t0, reply)
                if reply is None:
                    body, ctype = encode_result(result)
                else:
                    body, ctype = encode_body(result, reply.content_type)
            if tm.expired():  # the handler swallowed the cancellation and returned late
                raise TimeoutError
            _timed(headers, t0)
            if reply is None:
                return HttpResponse(body=body, headers={**headers, "Content-Type": content_type_header(ctype)})
            out.status = reply.status
            return HttpResponse(status=reply.status, body=body or None,
                                headers=_reply_headers(reply, headers, ctype and content_type_header(ctype)))
        except asyncio.CancelledError:
            out.status, out.code = 499, "cancelled"  # the client went away (or shutdown)
            raise
        except _ClientGone:
            out.status, out.code = 499, "client_gone"
            # aiohttp's own write_eof on the dead transport fails quietly
            return out.resp if out.resp is not None else StreamResponse()
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # sys.exit() in a handler must not stop us
            if isinstance(exc, TimeoutError) and tm.expired():
                status, code, message = 504, ErrorCode.TIMEOUT, f"the invocation exceeded its {timeout:.3f}s timeout"
                self.log.warning("invocation timed out", extra={**fields, "timeout": timeout})
            elif isinstance(exc, BadResult):
                status, code, message = 500, ErrorCode.BAD_RESULT, str(exc)
                self.log.error("bad handler result", extra={**fields, "error": message})
            else:
                status, code = 500, ErrorCode.FUNCTION_ERROR
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.log.error("function error", exc_info=exc, extra={**fields, "error": message})
            out.code = code
            if out.resp is not None:  # headers are gone: say it in the body, then break the stream
                out.aborted = True
                self.log.error("stream aborted", extra={**fields, "code": code, "chunks": out.chunks})
                await self._error_frame(out, code, message)
                return out.resp  # the transport is closed below, so no terminating chunk is sent
            out.status = status
            _timed(headers, t0)
            return error_response(status, code, message, headers)
        finally:
            cleanup = None
            if inspect.isasyncgen(gen):
                try:
                    async with asyncio.timeout(1.0):
                        await gen.aclose()
                except Exception:
                    self.log.warning("closing an async generator failed", exc_info=True, extra=fields)
            elif gen is not None and inspect.getgeneratorstate(gen) != inspect.GEN_CLOSED:
                cleanup = gen.close
            slot.release(cleanup)
            ms = round((time.monotonic() - t0) * 1000, 3)
            extra = {**fields, "status": out.status, "duration_ms": ms}
            if out.code:
                extra["code"] = out.code
            if out.resp is not None:
                extra.update(streamed=True, chunks=out.chunks, aborted=out.aborted)
            self.log.info("invoke", extra=extra)
            if out.aborted and request.transport is not None:
                request.transport.close()  # flushes what was written, never the final chunk

    async def _call(self, event: Any, ctx: Context, slot: Slot) -> Any:
        if self._is_async:
            return await self.handler(event, ctx)
        if self._is_gen:
            return self.handler(event, ctx)  # creating a generator runs none of its code
        result = await slot.in_thread(self.handler, event, ctx)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _error_frame(self, out: _Outcome, code: str, message: str) -> None:
        """The stream's last bytes when it fails: an ``event: error`` for Server-Sent Events,
        else a line with the error body after an RS (``wire.stream_error_frame``)."""
        if out.sse:
            frame = wire.sse_error_event(code, message)
        else:
            frame = (b"" if out.at_line_start else b"\n") + wire.stream_error_frame(code, message)
        try:
            async with asyncio.timeout(1.0):    # a client that reads nothing gets nothing more
                await out.resp.write(frame)
        except (ConnectionError, TimeoutError):
            pass

    async def _stream(self, request: Request, gen: Any, slot: Slot, headers: dict[str, str],
                      out: _Outcome, t0: float, reply: Response | None) -> StreamResponse | HttpResponse:
        if inspect.isasyncgen(gen):
            async def step() -> Any:
                try:
                    return await gen.__anext__()
                except StopAsyncIteration:
                    return END
        else:
            async def step() -> Any:
                return await slot.in_thread(_next, gen)

        status = 200 if reply is None else reply.status
        out.status = status
        encode = encode_item
        if isinstance(reply, SSE):
            # Server-Sent Events: the headers go at once (the type is known), so the client
            # sees the stream open, and any failure, even before the first event, is an event.
            out.sse, encode = True, sse_event
            item = None
            ctype = reply.content_type
            sse_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            extra = {k: v for k, v in sse_headers.items()
                     if not any(name.lower() == k.lower() for name, _ in reply.headers)}
        else:
            item = await step()
            if item is END:  # nothing streamed: headers are still ours, say so plainly
                ctype = BINARY if reply is None or reply.content_type is None else reply.content_type
                _timed(headers, t0)
                return HttpResponse(status=status, body=None, headers=_reply_headers(
                    reply, {**headers, STREAM: "1"}, content_type_header(ctype)))
            ctype = reply.content_type if reply is not None and reply.content_type else stream_content_type(item)
            extra = {}
        resp = StreamResponse(status=status, headers=_reply_headers(
            reply, {**headers, **extra, STREAM: "1"}, content_type_header(ctype)))
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
        except ConnectionError as exc:
            raise _ClientGone() from exc
        out.resp = resp
        if out.sse:
            item = await step()
        while item is not END:
            chunk = encode(item)
            if chunk:  # an empty chunk would end a chunked body early
                try:
                    await resp.write(chunk)  # one chunk per item, handed to the socket now
                except ConnectionError as exc:
                    raise _ClientGone() from exc
                out.chunks += 1
                out.at_line_start = chunk.endswith(b"\n")
            item = await step()
        try:
            await resp.write_eof()
        except ConnectionError as exc:
            raise _ClientGone() from exc
        return resp



def _timed(headers: dict[str, str], t0: float) -> None:
    """Set the time spent in the runtime on an answer's headers, and complete the handler's
    span report (wire.SPAN) with the same duration when the request carried a trace."""
    ms = (time.monotonic() - t0) * 1000
    headers[DURATION_MS] = f"{ms:.3f}"
    span = headers.get(wire.SPAN)
    if span is not None and span.endswith(";"):
        headers[wire.SPAN] = span + str(int(ms * 1e6))


def _reply_headers(reply: Response | None, platform: dict[str, str], content_type: str | None
                   ) -> Headers:
    """A response's headers: the handler's (already checked: no hop-by-hop, framing or
    X-Gantry-* names), the Content-Type, then the platform's."""
    out = Headers(reply.headers if reply is not None else ())
    if content_type:
        out["Content-Type"] = content_type
    out.update(platform)
    return out

"""Container logs -> the function's Redis stream (fields instance, line), capped.

One daemon thread per container follows Docker's log stream (a blocking call; a poll with
``since=`` would cost an API call per container per pass) and puts complete lines on a
thread-safe queue; the agent's loop drains the queue into Redis with XADD MAXLEN ~ N in one
pipeline.  The follower reconnects after an idle read timeout, resuming at the last
timestamp it saw, and ends when the container stops running.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from gantry_runtime.wire import is_ready_line


log = logging.getLogger("gantry.worker")

MAX_LINE = 16 * 1024         # longer lines are cut
MAX_QUEUED = 100_000         # lines waiting for Redis; beyond this new lines are dropped (and counted)


def _ts_key(stamp: str) -> tuple[str, int]:
    """An RFC 3339 timestamp with nanoseconds as a sortable key (Go trims trailing zeros)."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())[:9]
    return whole, int(digits.ljust(9, "0") or 0)


class LogFollower:
    def __init__(self, client, container_id: str, function: str, instance: str, sink: "LogShipper",
                 since: float | None = None, on_ready: Callable[[], None] | None = None) -> None:
        self.client, self.container_id, self.function, self.instance = client, container_id, function, instance
        self.sink = sink
        self._on_ready = on_ready   # called once, on the runtime's ready line (worker.readyreport)
        self._since = since
        self._last: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._stream = None
        self._thread = threading.Thread(target=self._run, name=f"gantry-logs-{instance}", daemon=True)

    def start(self) -> "LogFollower":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a half-closed socket may fail; the thread ends either way
                pass

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        import docker.errors

        while not self._stop.is_set():
            try:
                container = self.client.containers.get(self.container_id)
                self._stream = container.logs(stream=True, follow=True, timestamps=True,
                                              **({"since": self._since} if self._since else {}))
                self._pump(self._stream)
            except docker.errors.NotFound:
                return
            except Exception as exc:  # an idle read timeout, a dropped connection: reconnect
                log.debug("log stream interrupted", extra={"instance": self.instance, "error": repr(exc)})
            if self._stop.is_set():
                return
            # The stream ended: the container stopped (and we have read its last line), or the
            # connection went idle past the client's timeout (follow again from the last line).
            try:
                if self.client.containers.get(self.container_id).status in ("exited", "dead"):
                    return
            except docker.errors.NotFound:
                return
            except Exception:
                pass
            self._stop.wait(0.5)

    def _pump(self, chunks) -> None:
        partial = b""
        for chunk in chunks:
            if self._stop.is_set():
                return
            data = partial + chunk
            *lines, partial = data.split(b"\n")
            for raw in lines:
                self._line(raw)
        if partial:
            self._line(partial)

    def _line(self, raw: bytes) -> None:
        stamp, _, text = raw.rstrip(b"\r").partition(b" ")
        try:
            stamp_s = stamp.decode()
            key = _ts_key(stamp_s)
        except (UnicodeDecodeError, ValueError):
            stamp_s, key, text = "", None, raw   # not a timestamp: keep the whole line
        if key is not None:
            if self._last is not None and key <= self._last:
                return   # already shipped before a reconnect
            self._last = key
            try:
                self._since = _epoch_seconds(stamp_s)
            except ValueError:
                pass
        line = text.decode(errors="replace")[:MAX_LINE]
        if self._on_ready is not None and is_ready_line(line):
            on_ready, self._on_ready = self._on_ready, None
            on_ready()
        if line.strip():
            self.sink.put(self.function, self.instance, line)


def _epoch_seconds(stamp: str) -> float:
    from datetime import datetime, timezone

    whole, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return base + (int(frac[:6].ljust(6, "0")) / 1e6 if frac else 0.0)


class LogShipper:
    """The queue the followers fill and the agent drains into Redis.  A batch Redis did not
    take (it is down or restarting) is kept and sent first by the next flush, so an outage
    delays lines but loses none (beyond MAX_QUEUED waiting in all)."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._unsent: list[tuple[str, str, str]] = []   # the batch the last failed flush held
        self.dropped = 0
        self.shipped = 0

    def put(self, function: str, instance: str, line: str) -> None:
        if self._queue.qsize() + len(self._unsent) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.put((function, instance, line))

    async def flush(self, store, limit: int = 5000) -> int:
        """Append what is queued (at most LIMIT lines, the unsent batch first) to each
        function's log stream; the count shipped.  On a Redis error the batch is kept and the
        error raised."""
        items, self._unsent = self._unsent, []
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not items:
            return 0
        try:
            await store.append_logs(items, self.maxlen)
        except BaseException:
            self._unsent = items
            raise
        self.shipped += len(items)
        return len(items)

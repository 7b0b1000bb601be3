"""The client settings (flags, then GANTRY_URL / GANTRY_API_KEY, then the file `gantry up`
writes: ~/.config/gantry/config.toml), the error base class and the stream-error reader that
the SDK (gantry.sdk) builds on, and ``Client``: those settings, with a thin compatibility face
over the SDK for code written before it."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator

from gantry_runtime import wire

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config"))
    return os.path.join(base, "gantry", "config.toml")


def write_config(url: str, api_key: str) -> str:
    """Write the client config readable by its owner only (it holds the key)."""
    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'url = "{url}"\napi_key = "{api_key}"\n')
    return path


class APIError(Exception):
    """An error answer from the platform; str() is one line."""

    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message
        super().__init__(f"{status} {code}: {message}" if status else message)


class StreamError(APIError):
    """A response that failed after its headers (and perhaps some of its body) arrived: the
    status said success, so str() gives the code and message only."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, code, message)
        self.args = (f"{code}: {message}",)


class StreamTail:
    """Splits a streamed body into what may be shown now and what might be the stream's error
    frame (``wire.stream_error_frame``, or ``wire.sse_error_event`` for Server-Sent Events),
    which is held back until the next bytes or the end tell which it is.

    A frame starts a line and is the last thing a failed stream sends, so only bytes from a
    line that starts like one are held, and only until more bytes follow the frame's end."""

    HOLD_MAX = 64 * 1024       # held bytes that are not a frame by then are shown anyway

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.mark = wire.SSE_ERROR_EVENT if sse else wire.STREAM_ERROR_MARK
        self.end = b"\n\n" if sse else b"\n"
        self.held = bytearray()
        self.line_start = True
        self.shown = 0

    def feed(self, data: bytes) -> bytes:
        """The bytes that can be shown now."""
        buf = self.held
        buf += data
        out = bytearray()
        while buf:
            start = self._candidate(buf, self.line_start if not out else out.endswith(b"\n"))
            if start is None:
                out += buf
                buf.clear()
                break
            out += buf[:start]
            del buf[:start]
            end = buf.find(self.end, len(self.mark) - 1)
            if end >= 0 and end + len(self.end) < len(buf):   # more came after it: not the last
                cut = end + len(self.end)
                out += buf[:cut]
                del buf[:cut]
                continue
            if len(buf) > self.HOLD_MAX:
                out += buf
                buf.clear()
            break
        if out:
            self.line_start = out.endswith(b"\n")
            self.shown += len(out)
        return bytes(out)

    def _candidate(self, buf: bytearray, line_start: bool) -> int | None:
        """The first line start in ``buf`` whose bytes so far agree with the frame's mark."""
        pos = 0 if line_start else buf.find(b"\n") + 1
        if pos == 0 and not line_start:
            return None
        n = len(self.mark)
        while pos < len(buf):
            if self.mark.startswith(bytes(buf[pos:pos + n])):
                return pos
            nxt = buf.find(b"\n", pos)
            if nxt < 0:
                return None
            pos = nxt + 1
        return None

    def finish(self) -> bytes:
        """The stream ended properly: whatever was held is data."""
        return self.feed(b"") + self._release()

    def failed(self) -> tuple[bytes, tuple[str, str] | None]:
        """The stream broke off: (the bytes still to show, the (code, message) of its frame)."""
        held = bytes(self.held)
        err = wire.parse_sse_error(held) if self.sse else wire.parse_stream_error(held)
        if err is not None:
            self.held.clear()
            return b"", err
        return self._release(), None

    def broken(self, exc: BaseException) -> tuple[bytes, str, str]:
        """The stream broke off with EXC: (the bytes still to show, then the code and message to
        raise: its own error frame's, else ``stream_broken``)."""
        rest, err = self.failed()
        if err is not None:
            return rest, *err
        return rest, "stream_broken", (f"the response was cut off after {self.shown} bytes "
                                       f"({type(exc).__name__}); the function may not have finished")

    def _release(self) -> bytes:
        rest = bytes(self.held)
        self.held.clear()
        self.shown += len(rest)
        return rest


@dataclass(frozen=True)
class Client:
    """The platform's address and key as the CLI and the SDK find them (``resolve``), and a
    thin compatibility face over the SDK (``call``, ``invoke``) for code written before it
    (the e2e tests' helpers).  New code uses gantry.Client (gantry.sdk, docs/sdk.md)."""
    url: str
    api_key: str | None
    timeout: float = 330.0

    @classmethod
    def resolve(cls, url: str | None = None, api_key: str | None = None) -> "Client":
        file: dict[str, Any] = {}
        if os.path.isfile(config_path()):
            with open(config_path(), "rb") as f:
                file = tomllib.load(f)
        return cls(url=(url or os.environ.get("GANTRY_URL") or file.get("url") or DEFAULT_URL).rstrip("/"),
                   api_key=api_key or os.environ.get("GANTRY_API_KEY") or file.get("api_key"))

    @cached_property
    def sdk(self):
        """The gantry.Client this one delegates to (made once: it reads the config file)."""
        from .sdk.sync import Client as SDKClient

        return SDKClient(self.url, self.api_key, timeout=self.timeout)

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        """Any API call by its path: the decoded JSON answer (gantry.Client.request)."""
        return self.sdk.request(method, path, payload)

    def invoke(self, name: str, body: bytes, content_type: str,
               headers: dict[str, str] | None = None) -> Iterator[bytes]:
        """The response body as it arrives (gantry.Client.invoke with stream=True, given the body
        and headers as they are); a stream that fails part-way raises StreamError after the
        part that came."""
        return self.sdk._stream(f"/v1/invoke/{name}", body, {**(headers or {}), "Content-Type": content_type})

"""The OpenAI-compatible routes of vLLM functions (runtime "vllm"), and the token count read
from their answers.  Pure: no I/O (gateway.invoke forwards).

``POST /v1/invoke/{name}/v1/chat/completions``, ``POST .../v1/completions`` and ``GET
.../v1/models`` go to the engine's route of the same path, and nothing else does: the
engine's ``/health``, ``/metrics`` and its development routes (``/sleep``, ``/wake_up``,
``/is_sleeping``) are the platform's, never a caller's.

Tokens are counted from the ``usage`` object the engine writes: the last one in a JSON answer,
or in the last events of a stream (an OpenAI stream carries it in a final chunk only when the
caller asked for it with ``"stream_options": {"include_usage": true}``).  The gateway adds no
such option to a caller's request, so a stream whose caller did not ask is not counted; an
answer without usage counts no tokens.  Only the last TAIL bytes of an answer are kept for
this, so the memory per request is bounded whatever its length.
"""
from __future__ import annotations

import re

RUNTIME = "vllm"
# (method, path on the engine) -> whether its answer carries a usage object to count
ROUTES: dict[tuple[str, str], bool] = {
    ("POST", "/v1/chat/completions"): True,
    ("POST", "/v1/completions"): True,
    ("GET", "/v1/models"): False,
}
PATHS = tuple(sorted({path for _, path in ROUTES}))
TAIL = 16 * 1024      # bytes of an answer's end kept to find its usage (a usage chunk is ~200)

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_FIELD = re.compile(rb'"(prompt_tokens|completion_tokens)"\s*:\s*(\d+)')


def usage_of(data: bytes) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) of the last ``"usage"`` member in DATA (a JSON body,
    or the end of a stream of ``data: {...}`` events); None when the last one is null, cut
    off, or absent.  A quote inside a JSON string is escaped, so generated text that spells
    "usage" never matches."""
    at = data.rfind(b'"usage"')
    if at < 0:
        return None
    m = _USAGE.match(data, at)
    if m is None:
        return None                     # "usage": null, the final-chunk-less stream's shape
    depth, i, n = 1, m.end(), len(data)
    while i < n and depth:
        c = data[i]
        if c == 0x7B:                   # {  (prompt_tokens_details nests one level)
            depth += 1
        elif c == 0x7D:                 # }
            depth -= 1
        i += 1
    if depth:
        return None
    found = dict(_FIELD.findall(data, m.end(), i))
    if not found:
        return None
    return int(found.get(b"prompt_tokens", 0)), int(found.get(b"completion_tokens", 0))


class Tail:
    """The last TAIL bytes of a streamed answer (amortised: trimmed once twice as long)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        buf = self.buf
        buf += chunk
        if len(buf) > 2 * TAIL:
            del buf[:-TAIL]

    def usage(self) -> tuple[int, int] | None:
        return usage_of(bytes(self.buf[-TAIL:]))

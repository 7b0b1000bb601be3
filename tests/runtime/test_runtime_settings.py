"""Settings.from_env and result encoding, in process (no server)."""
from __future__ import annotations

import dataclasses

import pytest

from gantry_runtime.encode import BadResult, encode_item, encode_result, stream_content_type
from gantry_runtime.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({"GANTRY_HANDLER": "main:handle"})
    assert s == Settings(handler="main:handle", function="main", code_dir="/app", host="0.0.0.0",
                         port=8080, concurrency=4, timeout=30.0, drain_grace=25.0,
                         max_body=6 * 1024 * 1024, log_level="info")
    assert (s.module, s.attr) == ("main", "handle")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_every_variable():
    s = Settings.from_env({
        "GANTRY_HANDLER": "pkg.mod:Obj.method", "GANTRY_FUNCTION": "summarize", "GANTRY_CODE_DIR": "/code",
        "GANTRY_HOST": "127.0.0.1", "GANTRY_PORT": "9000", "GANTRY_CONCURRENCY": "16",
        "GANTRY_TIMEOUT": "2.5", "GANTRY_DRAIN_GRACE": "0", "GANTRY_MAX_BODY": "1024", "LOG_LEVEL": "DEBUG",
    })
    assert (s.function, s.code_dir, s.host, s.port, s.concurrency) == ("summarize", "/code", "127.0.0.1", 9000, 16)
    assert (s.timeout, s.drain_grace, s.max_body, s.log_level) == (2.5, 0.0, 1024, "debug")
    assert Settings.from_env({"GANTRY_HANDLER": "m:h", "GANTRY_TIMEOUT": "30s"}).timeout == 30.0


@pytest.mark.parametrize("env, needle", [
    ({}, "GANTRY_HANDLER is required"),
    ({"GANTRY_HANDLER": "main"}, "module:callable"),
    ({"GANTRY_HANDLER": "main:handle()"}, "module:callable"),
    ({"GANTRY_PORT": "0"}, "GANTRY_PORT: expected a whole number from 1 to 65535"),
    ({"GANTRY_PORT": "http"}, "GANTRY_PORT: expected a whole number"),
    ({"GANTRY_CONCURRENCY": "0"}, "GANTRY_CONCURRENCY: expected a whole number from 1 to"),
    ({"GANTRY_TIMEOUT": "0"}, "GANTRY_TIMEOUT: expected a duration above zero"),
    ({"GANTRY_TIMEOUT": "nan"}, "GANTRY_TIMEOUT"),
    ({"GANTRY_DRAIN_GRACE": "-1"}, "GANTRY_DRAIN_GRACE"),
    ({"GANTRY_MAX_BODY": "6MiB"}, "GANTRY_MAX_BODY: expected a size"),
    ({"GANTRY_LOG_LEVEL": "loud"}, "GANTRY_LOG_LEVEL"),
])
def test_bad_values_say_what_is_wrong(env, needle):
    with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({"GANTRY_HANDLER": "main:handle", **env} if env else {})


def test_encoding():
    assert encode_result({"a": "é"}) == ('{"a":"é"}'.encode(), "application/json")
    assert encode_result("hi") == (b"hi", "text/plain")
    assert encode_result(bytearray(b"\x00")) == (b"\x00", "application/octet-stream")
    assert encode_result(memoryview(b"ab")) == (b"ab", "application/octet-stream")
    with pytest.raises(BadResult, match="'set'"):
        encode_result({1})
    with pytest.raises(BadResult, match="not JSON serialisable"):
        encode_result({"x": object()})
    assert [stream_content_type(x) for x in ("a", b"a", {"a": 1})] == [
        "text/plain", "application/octet-stream", "application/x-ndjson"]
    assert encode_item({"i": 1}) == b'{"i":1}\n' and encode_item("x") == b"x"

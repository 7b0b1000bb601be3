"""The shared pieces in gantry_runtime: the wire contract, settings parsing, run_until_signal."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import pytest

from gantry_runtime import wire
from gantry_runtime.config import Env, SettingsError, given, parse_duration, parse_size
from gantry_runtime.loader import load_handler
from gantry_runtime.loop import run_until_signal


@pytest.mark.parametrize("raw, seconds", [(None, None), ("", None), ("5", 5.0), ("0.25", 0.25), ("1e3", 1000.0)])
def test_timeout_header_accepted(raw, seconds):
    assert wire.parse_timeout(raw) == seconds


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "inf", "nan", "30s"])
def test_timeout_header_refused(raw):
    with pytest.raises(wire.BadTimeout, match="X-Gantry-Timeout must be a positive number of seconds"):
        wire.parse_timeout(raw)


def test_timeout_header_round_trips():
    for seconds in (30.0, 0.1, 2.5, 1e-3):
        assert wire.parse_timeout(wire.format_timeout(seconds)) == pytest.approx(seconds)


def test_error_body_and_its_parse():
    body = wire.error_body(wire.ErrorCode.AT_CAPACITY, "busy é")
    assert json.loads(body) == {"error": {"code": "at_capacity", "message": "busy é"}}
    assert wire.parse_error(body) == ("at_capacity", "busy é")
    for junk in (b"", b"<html>", b'{"error": "x"}', b'{"error": {"code": 5}}', b"[1]"):
        assert wire.parse_error(junk) is None


@pytest.mark.parametrize("spec, parts", [
    ("main:handle", ("main", "handle")),
    ("pkg.mod:handle", ("pkg.mod", "handle")),
    ("main:App.handle", ("main", "App.handle")),
    ("_m:_h", ("_m", "_h")),
])
def test_handler_spec_accepted(spec, parts):
    assert wire.parse_handler(spec) == parts


@pytest.mark.parametrize("spec", ["main", "main:", ":handle", "main:handle()", "1main:h", "main:1h",
                                  "pkg..mod:h", "main:obj.", "a:b:c", "main: handle", None])
def test_handler_spec_refused(spec):
    with pytest.raises(ValueError, match="module:callable"):
        wire.parse_handler(spec)


def test_loader_resolves_a_dotted_callable(tmp_path):
    module = f"dotted_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "class App:\n    @staticmethod\n    def handle(event, ctx):\n        return event\n")
    assert load_handler(str(tmp_path), f"{module}:App.handle")(7, None) == 7
    with pytest.raises(ValueError, match="module:callable"):
        load_handler(str(tmp_path), f"{module}:App.")


def test_quantities_accept_units_and_bare_numbers():
    assert [parse_duration(v) for v in ("30s", "500ms", "5m", "1h", "30", "2.5", 7)] == \
        [30.0, 0.5, 300.0, 3600.0, 30.0, 2.5, 7.0]
    assert [parse_size(v) for v in ("512Mi", "8Gi", "2G", "64k", "1024", 5)] == \
        [512 * 2**20, 8 * 2**30, 2 * 10**9, 64_000, 1024, 5]
    for bad in (float("inf"), float("nan"), -1):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_env_reads_each_kind():
    e = Env({"D": "500ms", "Z": "0", "S": "8Gi", "N": "12", "F": "2.5", "C": "DEBUG", "B": "  "})
    assert (e.duration("D"), e.duration("Z", allow_zero=True), e.size("S")) == (0.5, 0.0, 8 * 2**30)
    assert (e.integer("N", lo=1, hi=20), e.number("F"), e.choice("C", ("debug", "info"))) == (12, 2.5, "debug")
    assert e.text("B") is None and e.duration("MISSING") is None
    assert given({"a": 1, "b": None, "c": 3}, {"c": None, "d": 4}) == {"a": 1, "c": 3, "d": 4}


@pytest.mark.parametrize("read, message", [
    (lambda e: e.duration("X"), 'X: expected a duration above zero such as "30s", "500ms" or "5m", got \'abc\''),
    (lambda e: e.duration("Z"), "Z: expected a duration above zero"),
    (lambda e: e.size("X"), 'X: expected a size such as "512Mi" or "2G" of at least 1, got \'abc\''),
    (lambda e: e.integer("X", lo=1, hi=9), "X: expected a whole number from 1 to 9, got 'abc'"),
    (lambda e: e.number("X", what="requests per second"), "X: expected requests per second >= 0, got 'abc'"),
    (lambda e: e.choice("X", ("a", "b")), "X: expected one of a, b, got 'abc'"),
])
def test_env_errors_are_one_line_naming_the_variable(read, message):
    with pytest.raises(SettingsError) as info:
        read(Env({"X": "abc", "Z": "0"}))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_run_until_signal_sets_the_stop_event_and_returns_the_result():
    before = signal.getsignal(signal.SIGTERM)

    async def main(stop: asyncio.Event) -> str:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
        return "stopped"

    assert run_until_signal(main) == "stopped"
    assert signal.getsignal(signal.SIGTERM) == before   # handlers are removed afterwards

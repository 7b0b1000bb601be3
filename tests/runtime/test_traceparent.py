"""W3C traceparent as the runtime reads it (gantry_runtime.wire), and the handler span report."""
from __future__ import annotations

import pytest

from gantry_runtime import wire

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_a_valid_traceparent():
    tp = wire.parse_traceparent(f"00-{TRACE}-{PARENT}-01")
    assert tp == wire.TraceParent(TRACE, PARENT, 1)
    assert wire.parse_traceparent(f"00-{TRACE}-{PARENT}-00").flags == 0


def test_a_later_version_is_read_by_its_first_fields():
    # the spec: a higher version may append fields after a "-"; its first four are read as 00's
    assert wire.parse_traceparent(f"01-{TRACE}-{PARENT}-01-what-comes-later") == wire.TraceParent(TRACE, PARENT, 1)
    assert wire.parse_traceparent(f"cc-{TRACE}-{PARENT}-09") == wire.TraceParent(TRACE, PARENT, 9)


@pytest.mark.parametrize("raw", [
    None, "", "garbage",
    f"ff-{TRACE}-{PARENT}-01",                 # version ff is forbidden
    f"00-{'0' * 32}-{PARENT}-01",              # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",               # all-zero parent id
    f"00-{TRACE.upper()}-{PARENT}-01",         # upper-case hex
    f"00-{TRACE[:-1]}g-{PARENT}-01",           # not hex
    f"00-{TRACE}-{PARENT}-1",                  # short flags
    f"00-{TRACE}-{PARENT}-01-extra",           # version 00 has exactly four fields
    f"01-{TRACE}-{PARENT}-01extra",            # a later version's extra fields follow a "-"
    f"0g-{TRACE}-{PARENT}-01",                 # version not hex
    f"00_{TRACE}_{PARENT}_01",                 # wrong separators
    f"00-{TRACE}{PARENT}-01--",
])
def test_an_invalid_traceparent_is_no_trace(raw):
    assert wire.parse_traceparent(raw) is None


def test_format_round_trips():
    raw = wire.format_traceparent(TRACE, PARENT, 1)
    assert raw == f"00-{TRACE}-{PARENT}-01"
    assert wire.parse_traceparent(raw) == wire.TraceParent(TRACE, PARENT, 1)


def test_new_span_ids_are_16_hex_digits_and_differ():
    ids = {wire.new_span_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 and int(i, 16) for i in ids)


def test_span_report_round_trips_and_refuses_junk():
    assert wire.parse_span(wire.format_span(PARENT, 1_700_000_000_000_000_000, 1234)) == \
        wire.SpanReport(PARENT, 1_700_000_000_000_000_000, 1234)
    assert wire.parse_span(wire.format_span(PARENT, 5, None)) == wire.SpanReport(PARENT, 5, None)   # a stream
    for junk in (None, "", "x;1;2", f"{PARENT};;2", f"{PARENT};1;2;3", f"{PARENT};-1;2", f"{PARENT};1;x",
                 f"{PARENT};١;2", f"{'0' * 16};1;2"):
        assert wire.parse_span(junk) is None, junk

"""The pure log decisions behind GET /v1/functions/NAME/logs and `gantry logs`: --since
parsing, level and instance filters, and the human-readable line."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from gantry import logview
from gantry.logview import LogQueryError

NOW = 1_700_000_000.0


@pytest.mark.parametrize("raw, expected", [
    ("90s", NOW - 90), ("10m", NOW - 600), ("1h30m", NOW - 5400), ("2d", NOW - 172800), ("500ms", NOW - 0.5),
    ("1699999000", 1699999000.0),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0), ("2023-11-14T22:13:20", 1_700_000_000.0),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
])
def test_since_accepts_durations_iso_times_and_epoch_seconds(raw, expected):
    assert logview.parse_since(raw, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("raw", ["", "10 minutes", "1x", "yesterday", "10m5", "-5m"])
def test_since_refuses_anything_else_naming_the_field(raw):
    with pytest.raises(LogQueryError, match="^since: "):
        logview.parse_since(raw, NOW)


def test_levels_take_aliases_and_refuse_unknown():
    assert logview.level_name("WARN") == "warning" and logview.level_name("error") == "error"
    with pytest.raises(LogQueryError, match="^level: expected one of debug, info"):
        logview.level_name("loud")


def _entry(line, instance="shop.cart-0123456789ab", entry_id="1700000000123-0"):
    return {"id": entry_id, "instance": instance, "line": line if isinstance(line, str) else json.dumps(line)}


def test_level_filter_is_this_level_and_above_and_plain_text_counts_as_info():
    warn = _entry({"level": "warning", "msg": "w"})
    assert logview.matches(warn, None, "warning") and logview.matches(warn, None, "info")
    assert not logview.matches(warn, None, "error")
    assert logview.matches(_entry("a bare print"), None, "info")
    assert not logview.matches(_entry("a bare print"), None, "warning")
    assert not logview.matches(_entry("{not json"), None, "error")


def test_instance_filter_takes_the_whole_id_a_prefix_or_the_short_id():
    e = _entry("x")
    for wanted in ("shop.cart-0123456789ab", "shop.cart-01", "01234567"):
        assert logview.matches(e, wanted, None)
    assert not logview.matches(e, "89ab", None) and not logview.matches(e, "other", None)
    assert logview.short_instance("shop.cart-0123456789ab") == "01234567"


def test_human_line_has_time_level_short_instance_message_and_compact_extras():
    line = logview.format_entry(_entry({"ts": "2024-05-01T12:00:00.123+00:00", "level": "error", "msg": "boom",
                                        "function": "cart", "logger": "gantry.function",
                                        "invocation_id": "abc", "status": 500, "tags": ["a", "b"],
                                        "note": "two words", "traceback": "Traceback\n  File x\nValueError"}))
    head, *tb = line.split("\n")
    assert head == ('2024-05-01T12:00:00.123Z ERROR    01234567 boom  invocation_id=abc status=500 '
                    'tags=["a","b"] note="two words"')
    assert tb == ["    Traceback", "      File x", "    ValueError"]


def test_plain_line_takes_its_time_from_the_stream_id():
    stamp = datetime.fromtimestamp(1700000000.123, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.123Z")
    assert logview.format_entry(_entry("hello there")) == f"{stamp} INFO     01234567 hello there"

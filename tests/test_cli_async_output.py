"""The pure formatting of gantry.cli_async: how an invocation's result and the dead-letter
table print (the commands themselves run against a platform in tests/e2e/test_cli_async.py)."""
from __future__ import annotations

import base64

from gantry.cli_async import format_dead, format_invocation, format_result

INV = {"id": "a" * 32, "function": "acme.resize", "tenant": "acme", "state": "succeeded", "priority": "low",
       "attempts": 2, "max_attempts": 3, "created": 0.0, "updated": 0.0, "started": None, "finished": 86400.5,
       "source": "schedule", "schedule": "nightly"}


def test_results_print_as_pretty_json_text_or_a_size():
    assert format_result(INV) is None
    assert format_result({**INV, "result": {"a": [1]}, "result_type": "application/json"}) == \
        '{\n  "a": [\n    1\n  ]\n}'
    assert format_result({**INV, "result": "ok", "result_type": "application/problem+json"}) == '"ok"'
    assert format_result({**INV, "result": "plain\ntext", "result_type": "text/plain; charset=utf-8"}) == "plain\ntext"
    png = {**INV, "result": base64.b64encode(b"\x89PNG\0").decode(), "result_encoding": "base64",
           "result_type": "image/png"}
    assert format_result(png) == f"5 bytes, not text (`gantry invocations result {'a' * 32}` writes them)"


def test_an_invocation_prints_as_aligned_lines_then_its_result():
    text = format_invocation({**INV, "error": {"code": "timeout", "message": "took 30s"},
                              "callback": {"url": "https://h/cb", "state": "pending", "attempts": 0,
                                           "status": None, "error": None},
                              "result": [1], "result_type": "application/json"})
    lines = text.splitlines()
    assert lines[:4] == [f"id:        {'a' * 32}", "function:  acme.resize", "state:     succeeded",
                         "attempts:  2 of 3"]
    assert "source:    schedule (schedule nightly)" in lines
    assert "started:   -" in lines and "finished:  1970-01-02 00:00:00 UTC" in lines
    assert "error:     timeout: took 30s" in lines and "callback:  https://h/cb (pending, 0 attempts)" in lines
    assert lines[-4:] == ["result (application/json):", "[", "  1", "]"]


def test_the_dead_letter_table():
    assert format_dead([]) == "no dead letters"
    table = format_dead([{**INV, "state": "dead", "attempts": 3, "dead_at": 60.0,
                          "error": {"code": "function_error", "message": "boom"}},
                         {**INV, "id": "b" * 32, "state": "expired", "attempts": 0, "dead_at": 120.0}])
    assert table.splitlines() == [
        "ID                                FUNCTION     STATE    ATTEMPTS  ERROR           DEAD AT (UTC)",
        f"{'a' * 32}  acme.resize  dead     3/3       function_error  1970-01-01 00:01:00",
        f"{'b' * 32}  acme.resize  expired  0/3       -               1970-01-01 00:02:00"]

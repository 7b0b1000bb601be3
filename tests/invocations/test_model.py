"""The pure decisions about async invocations (gantry.invocations.model)."""
from __future__ import annotations

from collections import Counter

import pytest

from gantry.invocations.model import (PRIORITIES, Invocation, State, Verdict, body_hash, may_retry, read_order,
                                      retry_delay, verdict, view)
from gantry.manifest import AsyncPolicy, Backoff


@pytest.mark.parametrize("status, expected", [
    (200, Verdict.SUCCEEDED), (204, Verdict.SUCCEEDED), (302, Verdict.SUCCEEDED),
    (400, Verdict.FAILED), (404, Verdict.FAILED), (422, Verdict.FAILED), (429, Verdict.FAILED),
    (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY), (504, Verdict.RETRY)])
def test_every_5xx_is_retried_and_no_4xx(status, expected):
    assert verdict(status) is expected


def test_backoff_doubles_from_initial_up_to_max():
    policy = AsyncPolicy(max_retries=10, backoff=Backoff(initial=1.0, max=5.0))
    assert [retry_delay(policy, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retries_stop_after_max_retries_or_past_the_deadline():
    policy = AsyncPolicy(max_retries=2)
    assert may_retry(policy, 1, 0.0, 100.0, 1.0) and may_retry(policy, 2, 0.0, 100.0, 1.0)
    assert not may_retry(policy, 3, 0.0, 100.0, 1.0)          # 3 attempts = 1 + max_retries
    assert not may_retry(policy, 1, 99.5, 100.0, 1.0)         # the retry would start past max_event_age
    assert not may_retry(AsyncPolicy(max_retries=0), 1, 0.0, 100.0, 1.0)


def test_read_order_serves_high_first_without_starving_low():
    firsts = Counter(read_order(tick)[0] for tick in range(800))
    assert firsts == {"high": 500, "normal": 200, "low": 100}
    for tick in range(0, 800, 8):       # low comes first in every window of 8 reads
        assert "low" in {read_order(t)[0] for t in range(tick, tick + 8)}
    assert all(sorted(read_order(t)) == sorted(PRIORITIES) for t in range(16))


def test_body_hash_binds_the_content_type_too():
    assert body_hash(b"{}", "application/json") != body_hash(b"{}", "text/plain")
    assert body_hash(b"{}", "application/json") == body_hash(b"{}", "application/json")


@pytest.mark.parametrize("result, rtype, shown, encoding", [
    (b'{"a": 1}', "application/json", {"a": 1}, None),
    (b"hello", "text/plain; charset=utf-8", "hello", None),
    (b"\xff\x00", "application/octet-stream", "/wA=", "base64"),
    (b"not json", "application/json", "bm90IGpzb24=", "base64")])
def test_the_view_decodes_the_result(result, rtype, shown, encoding):
    inv = Invocation.from_hash({b"id": b"x" * 32, b"function": b"f", b"tenant": b"default", b"state": b"succeeded",
                                b"attempts": b"1", b"max_retries": b"2", b"created": b"1.5", b"status": b"200",
                                b"result": result, b"result_type": rtype.encode()})
    out = view(inv)
    assert out["state"] == "succeeded" and out["max_attempts"] == 3 and out["result"] == shown
    assert out.get("result_encoding") == encoding


def test_a_record_without_a_result_shows_none_and_its_error():
    inv = Invocation.from_hash({"id": "y" * 32, "function": "acme.f", "tenant": "acme", "state": "dead",
                                "attempts": "3", "error_code": "function_error", "error": "boom",
                                "callback_url": "http://r", "callback_state": "pending"})
    out = view(inv)
    assert inv.state is State.DEAD and "result" not in out
    assert out["error"] == {"code": "function_error", "message": "boom"}
    assert out["callback"]["state"] == "pending" and out["callback"]["url"] == "http://r"

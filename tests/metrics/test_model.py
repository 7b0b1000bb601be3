"""The per-minute rows: what counts where, the stored layout, the API's summaries (pure)."""
from __future__ import annotations

import pytest

from gantry.metrics import histogram, model
from gantry.metrics.model import MetricsError, Rows

M = 29_000_000        # a minute since the epoch (hour 483333, minute 20 in it)


def test_an_invocation_counts_its_duration_bucket_and_errors_by_code():
    rows = Rows()
    rows.invocation(M, "default", "echo", True, 200, 0.05)
    rows.invocation(M, "default", "echo", True, 504, 1.5, "timeout")
    rows.invocation(M, "default", "echo", True, 500, 0.01)                  # the function's own 500
    rows.invocation(M, "default", "echo", True, 499, 0.2)                   # client gone: no error
    rows.invocation(M, "default", "echo", True, 202, 0.3, attempt=True)     # an async attempt
    rows.invocation(M, "default", "nope", False, 404, 0.001)                # not deployed: nowhere
    rows.invocation(M, "default", "echo", False, 429, 0.0)                  # throttled by name
    rows.invocation(M, "default", "Bad_Name", False, 429, 0.0)              # no function has it
    row = rows.rows[(M, "default", "echo")]
    buckets = {k: v for k, v in row.items() if k.startswith("b:")}
    assert sum(buckets.values()) == 5 and buckets[f"b:{histogram.index(1.5)}"] == 1
    assert {k: v for k, v in row.items() if not k.startswith("b:")} == {
        "n": 5, "a": 1, "t": 1, "d": 50_000 + 1_500_000 + 10_000 + 200_000 + 300_000,
        "e:timeout": 1, "e:500": 1}
    assert list(rows.rows) == [(M, "default", "echo")]


def test_tokens_add_up_per_function_and_in_the_tenants_sum():
    rows = Rows()
    rows.invocation(M, "acme", "chat", True, 200, 0.5)
    rows.tokens(M, "acme", "chat", 12, 30)
    rows.tokens(M, "acme", "chat", 8, 2)
    rows.tokens(M + 1, "acme", "chat", 1, 1)
    assert {k: v for k, v in rows.rows[(M, "acme", "chat")].items() if k in ("ti", "to")} == {"ti": 20, "to": 32}
    stored = model.scopes(rows.take())
    hour, mm = divmod(M, 60)
    assert stored[("tenant", "acme", hour)][f"{mm:02d}|ti"] == 20
    assert stored[("function", "acme.chat", hour)][f"{mm + 1:02d}|to"] == 1
    minutes = model.minute_rows({hour: {k: str(v) for k, v in stored[("function", "acme.chat", hour)].items()}},
                                M, M + 2)
    totals = model.summarize(list(minutes.values()), 120)
    assert (totals["tokens_in"], totals["tokens_out"], totals["invocations"]) == (21, 33, 1)
    assert model.summarize([], 60)["tokens_in"] == 0      # a function without tokens shows 0


def test_made_up_names_gather_under_other_past_the_row_bound(monkeypatch):
    monkeypatch.setattr(model, "MAX_ROWS", 2)
    rows = Rows()
    for i in range(5):
        rows.invocation(M, "t", f"made-up-{i}", False, 429, 0.0)
    assert {k[2]: r["t"] for k, r in rows.rows.items()} == {"made-up-0": 1, "made-up-1": 1, "_other": 3}


def test_peaks_are_per_function_and_the_tenant_peak_is_the_sum_at_one_moment():
    rows = Rows()
    rows.sample(M, [("acme", "a", 3, 2), ("acme", "b", 0, 1), ("default", "idle", 0, 0)])
    rows.sample(M, [("acme", "a", 1, 2), ("acme", "b", 4, 1)])
    assert rows.rows[(M, "acme", "a")] == {"ip": 3, "ni": 2}
    assert rows.rows[(M, "acme", "b")] == {"ip": 4, "ni": 1}
    assert rows.rows[(M, "acme", model.TENANT_ROW)] == {"ip": 5, "ni": 3}   # 1 + 4 beats 3 + 0
    assert (M, "default", "idle") not in rows.rows                         # idle: no row


def test_put_back_adds_counts_and_keeps_the_higher_peak():
    rows = Rows()
    rows.invocation(M, "t", "f", True, 200, 0.1)
    rows.sample(M, [("t", "f", 2, 1)])
    taken = rows.take()
    rows.invocation(M, "t", "f", True, 200, 0.1)
    rows.sample(M, [("t", "f", 1, 3)])
    rows.put_back(taken)
    row = rows.rows[(M, "t", "f")]
    assert (row["n"], row["d"], row["ip"], row["ni"]) == (2, 200_000, 2, 3)


def test_scopes_lay_rows_out_by_hour_and_sum_a_tenants_functions():
    rows = Rows()
    rows.invocation(M, "acme", "a", True, 200, 0.1)
    rows.invocation(M, "acme", "b", True, 502, 0.1, "function_crashed")
    rows.invocation(M + 45, "default", "echo", True, 200, 0.1)      # the next hour
    rows.sample(M, [("acme", "a", 1, 1), ("acme", "b", 1, 1)])
    out = model.scopes(rows.take())
    hour, mm = divmod(M, 60)
    b = f"{mm:02d}|b:{histogram.index(0.1)}"
    assert out[("function", "acme.a", hour)] == {f"{mm}|n": 1, f"{mm}|d": 100_000, b: 1, f"{mm}|ip": 1, f"{mm}|ni": 1}
    assert out[("tenant", "acme", hour)] == {f"{mm}|n": 2, f"{mm}|d": 200_000, b: 2, f"{mm}|e:function_crashed": 1,
                                             f"{mm}|ip": 2, f"{mm}|ni": 2}
    nxt, mm2 = divmod(M + 45, 60)
    assert nxt == hour + 1 and out[("function", "echo", nxt)][f"{mm2:02d}|n"] == 1
    assert out[("tenant", "default", nxt)][f"{mm2:02d}|n"] == 1


def test_a_report_sums_minutes_into_steps_and_totals():
    hour = M // 60
    first = hour * 60
    b1, b2 = histogram.index(0.1), histogram.index(2.0)
    hashes = {hour: {"00|n": "3", "00|d": "300000", f"00|b:{b1}": "3", "00|ip": "2", "00|ni": "1",
                     "04|n": "1", "04|d": "2000000", f"04|b:{b2}": "1", "04|e:timeout": "1", "04|t": "2",
                     "05|c": "2", "05|cw": "3000000", "05|ni": "4",
                     "59|n": "9", "junk": "1", "07|n": "x"}}
    r = model.report(hashes, first, first + 10, 5)
    assert r["since"] == first * 60 and r["until"] == (first + 10) * 60 and r["step"] == 300
    t = r["totals"]
    assert (t["invocations"], t["errors"], t["errors_by_code"], t["throttles"], t["cold_starts"]) == (
        4, 1, {"timeout": 1}, 2, 2)
    assert t["cold_wait_avg"] == 1.5 and t["duration"]["avg"] == pytest.approx(0.575)
    assert t["duration"]["p50"] == pytest.approx(histogram.middle(b1), rel=1e-5)
    assert t["duration"]["p99"] == pytest.approx(histogram.middle(b2), rel=1e-5)
    assert (t["inflight_peak"], t["instances_peak"]) == (2, 4)
    assert t["concurrency_avg"] == pytest.approx(2.3 / 600, abs=1e-4)
    first_point, second = r["series"]
    assert first_point["invocations"] == 4 and first_point["instances_peak"] == 1
    assert second["invocations"] == 0 and second["duration"]["p50"] is None and second["cold_starts"] == 2


@pytest.mark.parametrize("text, retention, minutes", [(None, 86400, 60), ("90s", 86400, 2), ("7d", 7 * 86400, 10080)])
def test_ranges(text, retention, minutes):
    assert model.parse_range(text, retention) == minutes


@pytest.mark.parametrize("text, retention, word", [
    ("30s", 86400, "at least 1m"), ("2d", 86400, "at most the retention"), ("soon", 86400, "expected a duration")])
def test_bad_ranges_say_why(text, retention, word):
    with pytest.raises(MetricsError, match=word) as info:
        model.parse_range(text, retention)
    assert info.value.param == "range"


def test_steps_default_to_at_most_360_points_and_must_be_on_the_ladder():
    assert [model.parse_step(None, m) for m in (60, 360, 361, 1440, 10080)] == [1, 1, 5, 5, 30]
    assert model.parse_step("15m", 1440) == 15
    with pytest.raises(MetricsError, match="expected one of 1m, 5m"):
        model.parse_step("7m", 60)
    with pytest.raises(MetricsError, match="points"):
        model.parse_step("1m", 10080)
    # the last 60 minutes up to the current one (600), the first moved back to a multiple of 5
    assert model.window(600 * 60 + 30, 60, 5) == (540, 601)

"""The pure part of usage: cost arithmetic, the monthly estimate, price tables, day ranges,
reading buckets back."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gantry.usage import model
from gantry.usage.model import Prices, UsageError


def _ts(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_cost_prices_every_counter():
    prices = Prices(cpu_second=0.00001, memory_gib_second=0.000001, gpu_second=0.0005, million_invocations=0.2)
    totals = {"invocations": 2_500_000, "errors": 10, "throttles": 99, "duration_seconds": 1e6,
              "cpu_seconds": 36_000.0, "memory_gib_seconds": 72_000.0, "gpu_seconds": 3600.0}
    # 0.36 (cpu) + 0.072 (memory) + 1.8 (gpu) + 0.5 (2.5 M invocations); errors, throttles and
    # duration are not priced
    assert model.cost(totals, prices) == pytest.approx(0.36 + 0.072 + 1.8 + 0.5, rel=1e-12)
    assert model.cost(totals, Prices()) == 0


def test_estimate_projects_month_to_date_at_the_rate_so_far():
    # 10 days of a 30-day month (April) have passed: the estimate is three times month to date
    assert model.estimate(12.0, _ts(2025, 4, 11)) == pytest.approx(36.0)
    # February 2024 (29 days) half-way: twice
    assert model.estimate(5.0, _ts(2024, 2, 15, 12)) == pytest.approx(10.0)
    # the first minutes of a month divide by an hour, not by a minute
    assert model.estimate(1.0, _ts(2025, 1, 1, 0, 1)) == pytest.approx(31 * 24)
    # the last second: about month to date itself
    assert model.estimate(7.0, _ts(2025, 1, 31, 23, 59, 59)) == pytest.approx(7.0, rel=1e-5)


def test_price_tables_parse_and_refuse_with_the_field_named():
    p = model.parse_prices('{"cpu_second": 1e-5, "million_invocations": 0.2, "currency": "EUR"}')
    assert (p.cpu_second, p.million_invocations, p.gpu_second, p.currency) == (1e-5, 0.2, 0.0, "EUR")
    for text, field in (('{"cpu_second": -1}', "prices.cpu_second"), ('{"cpu": 1}', "prices.cpu"),
                        ('{"gpu_second": true}', "prices.gpu_second"), ("[1]", "prices"), ("{", "prices")):
        with pytest.raises(UsageError) as err:
            model.parse_prices(text)
        assert str(err.value).startswith(field + ":"), str(err.value)


def test_day_ranges():
    now = _ts(2025, 3, 5, 13)
    assert model.day_range(None, None, now) == ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04", "2025-03-05"]
    assert model.day_range("3d", None, now) == ["2025-03-03", "2025-03-04", "2025-03-05"]
    assert model.day_range("2025-02-27", "2025-03-01", now) == ["2025-02-27", "2025-02-28", "2025-03-01"]
    assert model.month_days(now)[0] == "2025-03-01" and len(model.month_days(now)) == 5
    for since, until, field in (("yesterday", None, "since"), ("0d", None, "since"), ("2025-3-1", None, "since"),
                                ("2025-03-05", "2025-03-04", "until"), ("2020-01-01", None, "since")):
        with pytest.raises(UsageError) as err:
            model.day_range(since, until, now)
        assert str(err.value).startswith(field + ":"), str(err.value)


def test_aggregate_sums_days_per_function_and_ignores_unknown_fields():
    days = [{"echo|invocations": "3", "echo|cpu_seconds": "1.5", "b|errors": "1", "junk": "9", "echo|x": "1"},
            {"echo|invocations": "2", "b|gpu_seconds": "0.25"}]
    per, totals = model.aggregate(days)
    assert per["echo"]["invocations"] == 5 and per["echo"]["cpu_seconds"] == 1.5
    assert per["b"] == {**model.empty(), "errors": 1, "gpu_seconds": 0.25}
    assert totals["invocations"] == 5 and totals["errors"] == 1 and totals["gpu_seconds"] == 0.25
    assert set(per) == {"echo", "b"}

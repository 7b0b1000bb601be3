"""Every number of a spec is finite and within its documented range (README "Function
manifest"): NaN, Infinity, 2**70 and 10**30 are refused with the file and field named,
never accepted (the scheduler then raised on every pass) nor left to overflow msgpack."""
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gantry import state
from gantry.manifest import FunctionSpec, ManifestError, load_manifest
from gantry.quantities import parse_duration, parse_size

HOSTILE = [math.nan, math.inf, -math.inf, 2**70, 10**30, 1e30, 10**400]

# (section, key, the largest value accepted, what the message says)
FIELDS = [
    ("resources", "cpu", 1024, "a number from 0.01 to 1024"),
    ("resources", "memory", "16Ti", "16Ti"),
    ("resources", "gpu", 64, "a whole number from 0 to 64"),
    ("scaling", "min_instances", 10_000, "a whole number from 0 to 10000"),
    ("scaling", "max_instances", 10_000, "a whole number from 1 to 10000"),
    ("scaling", "concurrency", 10_000, "a whole number from 1 to 10000"),
    ("scaling", "idle_timeout", "30d", "a duration from 0 to 30 days"),
    ("scaling", "keep_paused", "30d", "a duration from 0 to 30 days"),
    ("limits", "timeout", "30d", "a duration from 0 to 30 days"),
]
THIRTY_DAYS = 30 * 86400


def spec(section: str, key: str, value) -> dict:
    data = {"name": "x", "handler": "main:handle", section: {key: value}}
    if key == "min_instances":
        data["scaling"]["max_instances"] = 10_000
    return data


@pytest.mark.parametrize("section, key, largest, expected", FIELDS)
@pytest.mark.parametrize("value", HOSTILE, ids=["nan", "inf", "-inf", "2**70", "10**30", "1e30", "10**400"])
def test_hostile_numbers_are_refused_with_the_field_named(section, key, largest, expected, value):
    with pytest.raises(ManifestError) as info:
        FunctionSpec.from_dict(spec(section, key, value), source="spec")
    assert info.value.field == f"{section}.{key}"
    assert str(info.value).startswith(f"spec: {section}.{key}: expected ")
    assert len(info.value.message) < 120          # 10**400 is not echoed whole


@pytest.mark.parametrize("section, key, largest, expected", FIELDS)
def test_the_upper_bounds_are_accepted_and_one_step_above_is_not(section, key, largest, expected):
    if largest == "30d":
        largest, above = "720h", THIRTY_DAYS + 1
    elif largest == "16Ti":
        above = 16 * 2**40 + 1
    else:
        above = largest + (0.5 if key == "cpu" else 1)
    got = FunctionSpec.from_dict(spec(section, key, largest))
    assert state.unpack(state.pack(got.to_dict())) == got.to_dict()
    with pytest.raises(ManifestError) as info:
        FunctionSpec.from_dict(spec(section, key, above))
    assert info.value.field == f"{section}.{key}" and expected in info.value.message


def test_nan_and_inf_in_a_toml_file_name_the_file(tmp_path):
    (tmp_path / "main.py").write_text("def handle(event, ctx):\n    return event\n")
    for body, field in [("[resources]\ncpu = nan", "resources.cpu"),
                        ("[resources]\ncpu = inf", "resources.cpu"),
                        ("[limits]\ntimeout = inf", "limits.timeout"),
                        ("[scaling]\nidle_timeout = nan", "scaling.idle_timeout"),
                        ("[resources]\nmemory = 1180591620717411303424", "resources.memory")]:
        (tmp_path / "gantry.toml").write_text(f'name = "x"\nhandler = "main:handle"\n{body}\n')
        with pytest.raises(ManifestError) as info:
            load_manifest(str(tmp_path))
        assert str(info.value).startswith(os.path.join(str(tmp_path), "gantry.toml") + f": {field}: expected")


@pytest.mark.parametrize("bad", ["9" * 400, "9" * 400 + "Ti", 10**400, 2**70, "1025Ti", -1])
def test_sizes_refuse_absurd_values_with_a_value_error(bad):
    with pytest.raises(ValueError, match="expected a size"):     # was OverflowError for "9" * 400
        parse_size(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400, "9" * 400 + "s", 1e30, "8761h"])
def test_durations_refuse_non_finite_and_absurd_values(bad):
    with pytest.raises(ValueError, match="expected a duration"):  # was OverflowError for 10**400
        parse_duration(bad)


def test_parsers_keep_their_range_within_the_callers_bound():
    assert parse_size("1024Ti") == 2**50 and parse_duration("8760h") == 365 * 86400.0
    assert parse_duration("720h", most=THIRTY_DAYS) == THIRTY_DAYS
    with pytest.raises(ValueError, match="from 0 to 30 days"):
        parse_duration("721h", most=THIRTY_DAYS)
    with pytest.raises(ValueError, match="from 0 to 16Ti"):
        parse_size("17Ti", most=16 * 2**40)


numbers = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.text(max_size=12), st.none())


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=numbers)
def test_any_number_is_either_refused_by_name_or_stored_and_read_back(field, value):
    """No value gets past validation that msgpack cannot carry or the scheduler cannot use."""
    section, key = field[0], field[1]
    try:
        got = FunctionSpec.from_dict(spec(section, key, value))
    except ManifestError as exc:
        assert exc.field == f"{section}.{key}"
        return
    data = got.to_dict()
    assert FunctionSpec.from_dict(state.unpack(state.pack(data))) == got
    for number in (got.resources.cpu, got.limits.timeout, got.scaling.idle_timeout, got.scaling.keep_paused):
        assert math.isfinite(number)
    assert int(round(got.resources.cpu * 1000)) <= 1024 * 1000      # what the scheduler reserves

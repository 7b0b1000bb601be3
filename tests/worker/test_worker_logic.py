"""Pure logic of the worker agent: the health state machine, settings, capacity, commands."""
from __future__ import annotations

import pytest

from gantry import state as st
from gantry.worker import commands, health
from gantry.worker.capacity import detect_cpu_millis, detect_memory, parse_cpu, parse_memory
from gantry.worker.logship import _ts_key
from gantry.worker.settings import WorkerSettings


def run(state: str, results: str, counters: health.Counters | None = None) -> list[str]:
    """Feed probe results ("+" ok, "-" failure) from STATE; the state after each."""
    counters = counters or health.Counters()
    seen = []
    for r in results:
        state = health.transition(state, counters, r == "+", "" if r == "+" else "boom") or state
        seen.append(state)
    return seen


def test_starting_turns_ready_on_the_first_success_and_failures_do_not_count():
    assert run(st.STARTING, "----+") == [st.STARTING] * 4 + [st.READY]


def test_ready_turns_unhealthy_after_three_failures_in_a_row():
    assert run(st.READY, "--+---") == [st.READY] * 5 + [st.UNHEALTHY]


def test_unhealthy_turns_ready_after_two_successes_in_a_row():
    assert run(st.UNHEALTHY, "+-+-++") == [st.UNHEALTHY] * 5 + [st.READY]


def test_full_cycle_and_reason_kept():
    counters = health.Counters()
    assert run(st.READY, "---++", counters) == [st.READY, st.READY, st.UNHEALTHY, st.UNHEALTHY, st.READY]
    assert counters.last_error == "boom"


@pytest.mark.parametrize("other", [st.PENDING, st.DRAINING, st.STOPPING, st.STOPPED, st.FAILED])
def test_other_states_are_left_alone(other):
    assert run(other, "---+++") == [other] * 6


def test_settings_from_env():
    s = WorkerSettings.from_env({"GANTRY_NODE_ID": "n1", "GANTRY_NODE_HOST": "10.0.0.5",
                                 "GANTRY_NODE_CPU": "1.5", "GANTRY_NODE_MEMORY": "2Gi",
                                 "GANTRY_DRAIN_GRACE": "3", "GANTRY_HEARTBEAT_TTL": "9"})
    assert (s.node_id, s.host, s.cpu_millis, s.memory, s.drain_grace, s.heartbeat_ttl) == \
        ("n1", "10.0.0.5", 1500, 2 * 2**30, 3.0, 9.0)
    default = WorkerSettings.from_env({})
    assert default.node_id and default.host == "127.0.0.1" and default.cpu_millis is None
    assert WorkerSettings.from_env({"GANTRY_NODE_CPU": "2500m"}, node_id="x").cpu_millis == 2500
    with pytest.raises(ValueError, match="GANTRY_DRAIN_GRACE"):
        WorkerSettings.from_env({"GANTRY_DRAIN_GRACE": "soon"})
    with pytest.raises(ValueError, match="TTL"):
        WorkerSettings.from_env({"GANTRY_HEARTBEAT_TTL": "0.5"})


def test_capacity_parsing_and_detection(tmp_path):
    assert parse_cpu("2") == 2000 and parse_cpu("0.25") == 250 and parse_cpu("750m") == 750
    assert parse_memory("512Mi") == 512 * 2**20 and parse_memory("1000") == 1000
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ValueError):
            parse_cpu(bad)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree:  1 kB\n")
    assert detect_memory(str(meminfo)) == 16384 * 1024
    assert detect_memory(str(tmp_path / "missing")) == 0
    assert detect_cpu_millis() >= 1000 and detect_cpu_millis() % 1000 == 0
    assert detect_memory() > 0


def test_command_decoding():
    assert commands.decode(st.command("stop", "abc", 3))["op"] == "stop"
    assert commands.decode(b"\xc1not msgpack") is None
    assert commands.decode(st.pack({"op": "explode", "instance": "a", "epoch": 1})) is None
    assert commands.decode(st.pack({"op": "stop", "epoch": 1})) is None
    assert commands.decode(st.pack({"op": "stop", "instance": "a", "epoch": "1"})) is None


def test_log_timestamps_sort_whatever_their_precision():
    assert _ts_key("2024-05-01T10:00:00.1Z") > _ts_key("2024-05-01T10:00:00.09Z")
    assert _ts_key("2024-05-01T10:00:00.100000000Z") == _ts_key("2024-05-01T10:00:00.1Z")
    assert _ts_key("2024-05-01T10:00:01Z") > _ts_key("2024-05-01T10:00:00.999999999Z")

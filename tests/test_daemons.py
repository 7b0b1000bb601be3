"""Settings read one way in every daemon: gantry.toml's units (bare numbers still work), and a bad
value is one line `gantry: error: ...` and a non-zero exit, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gantry.gateway.settings import GatewaySettings
from gantry.scheduler.settings import SchedulerSettings
from gantry.settings import DEFAULT_REDIS_URL, hash_key, redis_url
from gantry.worker.settings import WorkerSettings
from gantry_runtime.config import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_every_daemon_reads_units_and_bare_numbers():
    w = WorkerSettings.from_env({"GANTRY_HEALTH_INTERVAL": "500ms", "GANTRY_HEARTBEAT_TTL": "1m",
                                 "GANTRY_DRAIN_GRACE": "10", "GANTRY_NODE_MEMORY": "8Gi"}, node_id="n")
    assert (w.health_interval, w.heartbeat_ttl, w.drain_grace, w.memory) == (0.5, 60.0, 10.0, 8 * 2**30)
    s = SchedulerSettings.from_env({"GANTRY_SCHEDULER_INTERVAL": "250ms", "GANTRY_SCHEDULER_NODE_GRACE": "2m",
                                    "GANTRY_SCHEDULER_START_TIMEOUT": "90"})
    assert (s.interval, s.node_grace, s.start_timeout) == (0.25, 120.0, 90.0)
    g = GatewaySettings.from_env({"GANTRY_MAX_BODY": "6Mi", "GANTRY_COLD_START_TIMEOUT": "1.5m",
                                  "GANTRY_RATE_LIMIT": "50"})
    assert (g.max_body, g.cold_start_timeout, g.rate_limit) == (6 * 2**20, 90.0, 50.0)


@pytest.mark.parametrize("read, message", [
    (lambda: WorkerSettings.from_env({"GANTRY_HEALTH_INTERVAL": "abc"}),
     'GANTRY_HEALTH_INTERVAL: expected a duration such as "30s", "500ms" or "5m", got \'abc\''),
    (lambda: WorkerSettings.from_env({"GANTRY_NODE_CPU": "lots"}), "GANTRY_NODE_CPU: expected cores"),
    (lambda: WorkerSettings.from_env({"GANTRY_NODE_MEMORY": "0"}), "GANTRY_NODE_MEMORY: expected"),
    (lambda: SchedulerSettings.from_env({"GANTRY_SCHEDULER_INTERVAL": "0"}),
     "GANTRY_SCHEDULER_INTERVAL: expected a duration above zero"),
    (lambda: SchedulerSettings.from_env({"GANTRY_SCHEDULER_LEASE_MS": "3s"}),
     "GANTRY_SCHEDULER_LEASE_MS: expected a whole number"),
    (lambda: GatewaySettings.from_env({"GANTRY_MAX_BODY": "6MiB"}), "GANTRY_MAX_BODY: expected a size"),
    (lambda: GatewaySettings.from_env({"GANTRY_RATE_LIMIT": "-1"}), "GANTRY_RATE_LIMIT: expected a number"),
])
def test_bad_settings_name_the_variable(read, message):
    with pytest.raises(SettingsError) as info:
        read()
    assert str(info.value).startswith(message)


def test_one_redis_default_and_one_key_hash():
    assert redis_url({}) == DEFAULT_REDIS_URL == GatewaySettings.from_env({}).redis_url
    assert redis_url({"GANTRY_REDIS_URL": " redis://h:1/2 "}) == "redis://h:1/2"
    assert hash_key("k") == "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'runtime'}",
                "XDG_CONFIG_HOME": str(tmp_path), "GANTRY_REDIS_URL": "redis://127.0.0.1:1/0", **env}
    return subprocess.run([sys.executable, *args], env=full_env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, env, message", [
    (["-m", "gantry.daemons", "scheduler"], {"GANTRY_SCHEDULER_INTERVAL": "abc"},
     "GANTRY_SCHEDULER_INTERVAL: expected a duration"),
    (["-m", "gantry.daemons", "scheduler"], {"GANTRY_SCHEDULER_LEASE_MS": "100"},
     "lease_ms (GANTRY_SCHEDULER_LEASE_MS) must be at least three intervals"),
    (["-m", "gantry.daemons", "worker"], {"GANTRY_HEALTH_INTERVAL": "abc"},
     "GANTRY_HEALTH_INTERVAL: expected a duration"),
    (["-m", "gantry.daemons", "worker"], {"GANTRY_HEARTBEAT_TTL": "0.5"}, "GANTRY_HEARTBEAT_TTL: expected"),
    (["-m", "gantry.daemons", "gateway"], {"GANTRY_GATEWAY_PORT": "http"}, "GANTRY_GATEWAY_PORT: expected"),
    (["-m", "gantry.cli", "up"], {"GANTRY_DRAIN_GRACE": "soon"}, "GANTRY_DRAIN_GRACE: expected a duration"),
])
def test_a_bad_setting_stops_a_daemon_with_one_line(tmp_path, args, env, message):
    done = _run(args, tmp_path, **env)
    assert done.returncode == 2
    assert done.stderr.startswith(f"gantry: error: {message}") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())   # nothing started or written

"""gantry.toml parsing: valid manifests round-trip, bad ones name file, field and expectation."""
import os

import pytest

from gantry.manifest import FunctionSpec, ManifestError, load_manifest
from gantry.quantities import parse_duration, parse_size

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def write(tmp_path, toml: str, module: str | None = "main") -> str:
    (tmp_path / "gantry.toml").write_text(toml)
    if module:
        (tmp_path / f"{module}.py").write_text("def handle(event, ctx):\n    return event\n")
    return str(tmp_path)


@pytest.mark.parametrize("name", ["hello", "stream", "wordcount"])
def test_examples_are_valid(name):
    spec = load_manifest(os.path.join(EXAMPLES, name))
    assert spec.name == name
    assert FunctionSpec.from_dict(spec.to_dict()) == spec


def test_full_manifest(tmp_path):
    spec = load_manifest(write(tmp_path, '''
name = "summarize"
handler = "main:handle"
runtime = "python3.11"
[resources]
cpu = 0.5
memory = "512Mi"
gpu = 0
[scaling]
min_instances = 1
max_instances = 10
concurrency = 4
idle_timeout = "60s"
keep_paused = "2m"
[limits]
timeout = "1.5m"
[env]
LOG_LEVEL = "info"
DEBUG = true
'''))
    assert spec.resources.memory == 512 * 2**20
    assert spec.scaling.idle_timeout == 60.0
    assert spec.scaling.keep_paused == 120.0
    assert spec.limits.timeout == 90.0
    assert spec.env == {"LOG_LEVEL": "info", "DEBUG": "true"}
    assert FunctionSpec.from_dict(spec.to_toml_dict()) == spec


@pytest.mark.parametrize("body, field, expected", [
    ('name = "Bad_Name"\nhandler = "main:handle"', "name", "[a-z]"),
    ('name = "x"\nhandler = "main"', "handler", "module:callable"),
    ('name = "x"\nhandler = "main:handle"\ncolour = "red"', "colour", "unknown key"),
    ('name = "x"\nhandler = "main:handle"\n[resources]\nmemory = "512Q"', "resources.memory", "512Mi"),
    ('name = "x"\nhandler = "main:handle"\n[resources]\ncpus = 1', "resources.cpus", "unknown key"),
    ('name = "x"\nhandler = "main:handle"\n[scaling]\nconcurrency = 0', "scaling.concurrency", "from 1 to 10000"),
    ('name = "x"\nhandler = "main:handle"\n[scaling]\nmin_instances = 5\nmax_instances = 2',
     "scaling.min_instances", "at most max_instances"),
    ('name = "x"\nhandler = "main:handle"\n[limits]\ntimeout = "soon"', "limits.timeout", "duration"),
    ('name = "x"\nhandler = "main:handle"\n[scaling]\nkeep_paused = "a while"', "scaling.keep_paused", "duration"),
    ('name = "x"\nhandler = "main:handle"\n[scaling]\nkeep_paused = "-5s"', "scaling.keep_paused", "duration"),
    ('name = "x"\nhandler = "main:handle"\nruntime = "node"', "runtime", "python3.11"),
    ('name = "x"\nhandler = "main:handle"\n[env]\nGANTRY_PORT = "1"', "env.GANTRY_PORT", "reserved"),
])
def test_bad_manifest_names_file_field_and_expectation(tmp_path, body, field, expected):
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, body))
    err = info.value
    assert err.field == field
    assert expected in err.message
    assert str(err).startswith(os.path.join(str(tmp_path), "gantry.toml") + f": {field}: ")


def test_keep_paused_defaults_to_five_minutes_and_zero_disables_pausing(tmp_path):
    base = 'name = "x"\nhandler = "main:handle"\n'
    assert load_manifest(write(tmp_path, base)).scaling.keep_paused == 300.0
    spec = load_manifest(write(tmp_path, base + '[scaling]\nkeep_paused = "0s"'))
    assert spec.scaling.keep_paused == 0.0
    assert FunctionSpec.from_dict(spec.to_toml_dict()) == spec
    old = spec.to_dict()                  # a spec stored before the field existed
    del old["scaling"]["keep_paused"]
    assert FunctionSpec.from_dict(old).scaling.keep_paused == 300.0


def test_missing_handler_file(tmp_path):
    with pytest.raises(ManifestError, match=r"handler: module 'app' not found: expected app\.py"):
        load_manifest(write(tmp_path, 'name = "x"\nhandler = "app:handle"'))


def test_missing_manifest_and_bad_toml(tmp_path):
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(str(tmp_path))
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(write(tmp_path, 'name = "x\n'))


@pytest.mark.parametrize("text, value", [("512Mi", 512 * 2**20), ("2G", 2 * 10**9), ("1.5Gi", 3 * 2**29),
                                         ("64k", 64000), (1024, 1024)])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", [("60s", 60.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), (2, 2.0)])
def test_durations(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["512Q", "-1", "", True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("handler", ["main:handle", "main:App.handle", "pkg.main:handle"])
def test_handler_specs_the_runtime_loads_are_accepted(tmp_path, handler):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "main.py").write_text("def handle(event, ctx):\n    return event\n")
    spec = load_manifest(write(tmp_path, f'name = "x"\nhandler = "{handler}"'))
    assert spec.handler == handler and FunctionSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("handler", ["main", "main:", "main:handle()", "main:obj.", "pkg..main:h", "a:b:c", 7])
def test_handler_specs_the_runtime_refuses_are_refused(handler):
    data = {"name": "x", "handler": handler}
    with pytest.raises(ManifestError, match=r'handler: expected "module:callable"'):
        FunctionSpec.from_dict(data)


# --- [secrets] (docs/tenants.md, "Secrets") ----------------------------------------------

def test_secrets_table_maps_variables_to_secret_names_and_round_trips(tmp_path):
    spec = load_manifest(write(tmp_path, 'name = "f"\nhandler = "main:handle"\n[env]\nMODEL = "gpt"\n'
                                         '[secrets]\nOPENAI_API_KEY = "openai"\nDB_URL = "db.prod-1"\n'))
    assert spec.secrets == {"OPENAI_API_KEY": "openai", "DB_URL": "db.prod-1"}
    assert spec.env == {"MODEL": "gpt"}
    assert FunctionSpec.from_dict(spec.to_dict()) == spec
    assert "tenant" not in spec.to_toml_dict()          # a manifest never carries its tenant


@pytest.mark.parametrize("table, field, expected", [
    ('OPENAI_API_KEY = 3', "secrets.OPENAI_API_KEY", "expected the name of a secret"),
    ('OPENAI_API_KEY = "has space"', "secrets.OPENAI_API_KEY", "expected the name of a secret"),
    ('OPENAI_API_KEY = ""', "secrets.OPENAI_API_KEY", "expected the name of a secret"),
    ('"1BAD" = "openai"', "secrets.1BAD", "expected a variable name"),
    ('GANTRY_TOKEN = "openai"', "secrets.GANTRY_TOKEN", "reserved for the platform"),
    ('MODEL = "openai"', "secrets.MODEL", "also set in [env]"),
])
def test_bad_secrets_entries_name_the_field(tmp_path, table, field, expected):
    with pytest.raises(ManifestError) as err:
        load_manifest(write(tmp_path, f'name = "f"\nhandler = "main:handle"\n[env]\nMODEL = "x"\n[secrets]\n{table}\n'))
    assert field in str(err.value) and expected in str(err.value), str(err.value)


def test_a_manifest_cannot_name_its_tenant(tmp_path):
    with pytest.raises(ManifestError) as err:
        load_manifest(write(tmp_path, 'name = "f"\nhandler = "main:handle"\ntenant = "acme"\n'))
    assert "tenant" in str(err.value)


def test_scaling_policy_fields_default_to_todays_behaviour_and_round_trip(tmp_path):
    base = 'name = "x"\nhandler = "main:handle"\n'
    plain = load_manifest(write(tmp_path, base)).scaling
    assert (plain.target_utilization, plain.scale_up_cooldown, plain.scale_down_cooldown) == (1.0, 0.0, 0.0)
    spec = load_manifest(write(tmp_path, base + '[scaling]\ntarget_utilization = 0.8\n'
                                               'scale_up_cooldown = "15s"\nscale_down_cooldown = "2m"'))
    assert (spec.scaling.target_utilization, spec.scaling.scale_up_cooldown,
            spec.scaling.scale_down_cooldown) == (0.8, 15.0, 120.0)
    assert FunctionSpec.from_dict(spec.to_toml_dict()) == spec
    assert FunctionSpec.from_dict(spec.to_dict()) == spec
    old = spec.to_dict()                  # a spec stored before the fields existed
    for key in ("target_utilization", "scale_up_cooldown", "scale_down_cooldown"):
        del old["scaling"][key]
    assert FunctionSpec.from_dict(old).scaling == plain


@pytest.mark.parametrize("line, field, expected", [
    ("target_utilization = 0", "scaling.target_utilization", "from 0.01 to 1"),
    ("target_utilization = 1.5", "scaling.target_utilization", "from 0.01 to 1"),
    ('target_utilization = "high"', "scaling.target_utilization", "from 0.01 to 1"),
    ("target_utilization = nan", "scaling.target_utilization", "from 0.01 to 1"),
    ('scale_up_cooldown = "soon"', "scaling.scale_up_cooldown", "duration"),
    ('scale_down_cooldown = "-1s"', "scaling.scale_down_cooldown", "duration"),
    ('scale_down_cooldown = "999d"', "scaling.scale_down_cooldown", "30 days"),
])
def test_bad_scaling_policy_names_the_field(tmp_path, line, field, expected):
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, f'name = "x"\nhandler = "main:handle"\n[scaling]\n{line}'))
    assert info.value.field == field
    assert expected in info.value.message

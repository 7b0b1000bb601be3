"""docs/settings.md is the one place every setting is listed: each GANTRY_* variable the code
reads is there (those only the worker sets for the runtime are in docs/runtime.md)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# set by the worker for each container from the spec and the instance, not by an operator
SET_BY_THE_PLATFORM = {"GANTRY_HANDLER", "GANTRY_FUNCTION", "GANTRY_CODE_DIR", "GANTRY_INSTANCE_KEY"}


def test_every_variable_the_code_reads_is_in_docs_settings_md():
    doc = (ROOT / "docs" / "settings.md").read_text()
    found = set()
    for path in [*(ROOT / "platform").rglob("*.py"), *(ROOT / "runtime").rglob("*.py")]:
        found |= set(re.findall(r"GANTRY_[A-Z][A-Z_]*[A-Z]", path.read_text()))
    listed = set(re.findall(r"GANTRY_[A-Z][A-Z_]*[A-Z]", doc))
    # GANTRY_RATE_BURST is written "GANTRY_RATE_LIMIT / _BURST" in the tables
    listed |= {f"{name.rsplit('_', 1)[0]}_BURST" for name in listed if name.endswith(("_LIMIT", "_RATE"))}
    listed |= {f"{name.rsplit('_', 1)[0]}_PORT" for name in listed if name.endswith("_HOST")}
    missing = sorted(found - listed - SET_BY_THE_PLATFORM - {"GANTRY_SCHEDULER"})
    assert not missing, f"not in docs/settings.md: {missing}"

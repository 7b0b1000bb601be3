"""Pick the compiled hot-path module or its pure-Python twin, as aiohttp and yarl do.

The C module is used unless GANTRY_NO_EXTENSIONS is set (to any non-empty value) or its
import fails (no compiler on the installing machine).  ``IMPLEMENTATIONS`` records which
one each public module got, so a guard test can fail when CI silently fell back.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = bool(os.environ.get("GANTRY_NO_EXTENSIONS"))

#: public module name -> "c" or "py"
IMPLEMENTATIONS: dict[str, str] = {}


def load(name: str) -> ModuleType:
    """Return gantry.hotpath._{name}_c, or _{name}_py when the C one is off or missing."""
    if not NO_EXTENSIONS:
        try:
            module = importlib.import_module(f"gantry.hotpath._{name}_c")
        except ImportError:
            pass
        else:
            IMPLEMENTATIONS[name] = "c"
            return module
    IMPLEMENTATIONS[name] = "py"
    return importlib.import_module(f"gantry.hotpath._{name}_py")


def twins(name: str) -> dict[str, ModuleType]:
    """Both implementations that can be imported here, for tests that run one body on each."""
    found = {"py": importlib.import_module(f"gantry.hotpath._{name}_py")}
    try:
        found["c"] = importlib.import_module(f"gantry.hotpath._{name}_c")
    except ImportError:
        pass
    return found

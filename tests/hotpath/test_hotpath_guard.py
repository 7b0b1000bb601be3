"""Fail when a public hot-path module silently fell back to its pure-Python twin."""
from __future__ import annotations

import importlib

from gantry.hotpath import _select


def test_c_extensions_loaded():
    for name in ("ratelimit", "router", "placement"):
        importlib.import_module(f"gantry.hotpath.{name}")
    expected = "py" if _select.NO_EXTENSIONS else "c"
    got = {name: _select.IMPLEMENTATIONS.get(name) for name in ("ratelimit", "router", "placement")}
    assert got == dict.fromkeys(got, expected), (
        f"hot-path modules loaded {got}; build with `python setup.py build_ext --inplace`")

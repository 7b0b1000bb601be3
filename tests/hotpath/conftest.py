"""Run each hot-path test body on both twins.  A missing C build FAILS the "c" case."""
from __future__ import annotations

import pytest

from gantry.hotpath._select import twins

IMPLS = ["c", "py"]


def twin(name: str, impl: str):
    found = twins(name)
    if impl not in found:
        pytest.fail(f"gantry.hotpath._{name}_c is not built: run "
                    "`python setup.py build_ext --inplace` (or pip install -e .)")
    return found[impl]


@pytest.fixture(params=IMPLS)
def rl(request):
    """The rate-limit module (_ratelimit_c or _ratelimit_py)."""
    return twin("ratelimit", request.param)


@pytest.fixture(params=IMPLS)
def rt(request):
    """The router module (_router_c or _router_py)."""
    return twin("router", request.param)


@pytest.fixture(params=IMPLS)
def pl(request):
    """The placement module (_placement_c or _placement_py)."""
    return twin("placement", request.param)

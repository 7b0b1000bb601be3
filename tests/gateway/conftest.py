"""Fixtures of the gateway tests (helpers in support.py)."""
from __future__ import annotations

import pytest

from .support import Runtimes


@pytest.fixture(scope="session")
def runtimes(tmp_path_factory):
    pool = Runtimes(tmp_path_factory.mktemp("runtimes"))
    yield pool
    pool.stop_all()

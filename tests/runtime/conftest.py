"""The ``start`` fixture (a real runtime subprocess, test_runtime_server) for every test here."""
from test_runtime_server import start  # noqa: F401 - the fixture

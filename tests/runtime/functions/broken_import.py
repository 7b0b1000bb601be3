"""Fails at import: a module that does not exist."""
import gantry_no_such_module  # noqa: F401


def handle(event, ctx):
    return {}

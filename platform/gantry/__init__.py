"""Gantry: a self-hosted serverless platform for AI-agent workloads."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from gantry import Client, AsyncClient``: the SDK, imported on first use (the daemons
    and the CLI's other commands do not load it)."""
    if name in ("Client", "AsyncClient"):
        from . import sdk
        return getattr(sdk, name)
    raise AttributeError(f"module 'gantry' has no attribute {name!r}")

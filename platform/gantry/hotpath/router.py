"""Weighted, load-aware instance router: the compiled module, or its pure-Python twin.

See gantry.hotpath._router_py for the algorithm and the slot lifetime.
"""
from ._select import load

_impl = load("router")
Router = _impl.Router

__all__ = ["Router"]

"""Tenant placement by consistent hashing with bounded loads: compiled module or twin.

See gantry.hotpath._placement_py for the algorithm, the hash and the load bound.
"""
from ._select import load

_impl = load("placement")
Placement = _impl.Placement
hash64 = _impl.hash64

__all__ = ["Placement", "hash64"]

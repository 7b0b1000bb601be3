"""Coordination: the scheduler's leader lease with a fencing epoch (lease.py), and the
primitives for functions (docs/coordination.md): the Redis side in store.py, served by the
gateway's /v1/coord API, and the SDK (client.py: ``Coord``, ``AsyncCoord``)."""
from .client import (AsyncCoord, AsyncElection, AsyncLock, Change, Compacted, Coord, CoordCode, CoordError,
                     Election, Entry, FenceError, Item, Lock, LockTimeout, ServiceInstance, VersionMismatch)
from .lease import LeaderLease

__all__ = ["AsyncCoord", "AsyncElection", "AsyncLock", "Change", "Compacted", "Coord", "CoordCode", "CoordError",
           "Election", "Entry", "FenceError", "Item", "LeaderLease", "Lock", "LockTimeout", "ServiceInstance",
           "VersionMismatch"]

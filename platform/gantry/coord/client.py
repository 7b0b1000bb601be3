"""The coordination SDK for any client with a key: ``Coord(url, key)`` (synchronous) and
``AsyncCoord(url, key)``.  It is the very module functions use through ``ctx.coord``
(gantry_runtime.coord), so the client is written once for both sides of the wire."""
from gantry_runtime.coord import (AsyncCoord, AsyncElection, AsyncLock, Change, Compacted, Coord, CoordCode,
                                  CoordError, Election, Entry, FenceError, Item, Lock, LockTimeout,
                                  ServiceInstance, VersionMismatch)

__all__ = ["AsyncCoord", "AsyncElection", "AsyncLock", "Change", "Compacted", "Coord", "CoordCode", "CoordError",
           "Election", "Entry", "FenceError", "Item", "Lock", "LockTimeout", "ServiceInstance", "VersionMismatch"]

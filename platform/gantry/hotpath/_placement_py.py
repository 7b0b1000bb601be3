"""Tenant placement by consistent hashing with bounded loads, twin of ext/_placement_c.pyx.

Why a hash ring with virtual nodes: adding or removing a node moves only the keys on the
arcs it gains or loses (the minimal share, ~1/n, all to or from that node; a Maglev table
moved ~1.5% for 1/101 here), walking the ring from a key's point gives a stable preference
order of distinct nodes (``rank``), and it is the structure the bounded-load analysis is
written for.  A lookup is one hash and a binary search over ``n * vnodes`` sorted points.
The ring depends only on the set of node names, so every scheduler replica builds the same.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018): ``assign(key)`` walks from the key's
point to the first node whose load is below ``ceil((1 + eps) * m / n)`` (``m`` assigned keys
counting this one, ``n`` nodes); so no node exceeds that cap at the time of any assignment.
Assigned keys never move by themselves: after ``release``s or ``add_node`` a node may sit
above the new cap until its keys leave; ``remove_node`` returns its keys so the caller
re-assigns them.

Hash: ``hash64``, murmur3-style over little-endian 8-byte words (zero-padded tail) with the
fmix64 finaliser, identical in both twins; str keys hash as UTF-8.  A node's points are a
splitmix64 stream seeded by the hash of its name; ties sort by node name.
"""
from __future__ import annotations

import math
import struct
from bisect import bisect_left

_M64 = 0xFFFFFFFFFFFFFFFF
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F
_F1 = 0xFF51AFD7ED558CCD
_F2 = 0xC4CEB9FE1A85EC53
_SEED = 0x9E3779B97F4A7C15
_GOLDEN = 0x9E3779B97F4A7C15


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * _F1) & _M64
    h ^= h >> 33
    h = (h * _F2) & _M64
    return h ^ (h >> 33)


def hash64(data) -> int:
    """The placement hash of a str (as UTF-8) or bytes; identical in C and Python."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        raise TypeError(f"keys are str or bytes, got {type(data).__name__}")
    n = len(data)
    h = _SEED ^ ((n * _F1) & _M64)
    full = n >> 3
    words = list(struct.unpack_from(f"<{full}Q", data)) if full else []
    if n & 7:
        words.append(int.from_bytes(data[full * 8:], "little"))
    for w in words:
        w = (w * _C1) & _M64
        w = ((w << 31) | (w >> 33)) & _M64
        w = (w * _C2) & _M64
        h ^= w
        h = ((h << 27) | (h >> 37)) & _M64
        h = (h * 5 + 0x52DCE729) & _M64
    return _fmix64(h)


def _points(name: str, vnodes: int) -> list[int]:
    h = hash64(name)
    return [_fmix64((h + k * _GOLDEN) & _M64) for k in range(1, vnodes + 1)]


class Placement:
    """Consistent hashing with bounded loads over named nodes; see the module docstring."""

    __slots__ = ("eps", "vnodes", "_names", "_index", "_loads", "_points", "_owners",
                 "_assigned", "_total", "_seen", "_stamp")

    def __init__(self, eps: float = 0.25, vnodes: int = 160) -> None:
        eps = float(eps)
        if not (0.0 <= eps < float("inf")):
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not 1 <= int(vnodes) <= 65536:
            raise ValueError(f"vnodes must be in [1, 65536], got {vnodes!r}")
        self.eps = eps
        self.vnodes = int(vnodes)
        self._names: list[str] = []  # sorted
        self._index: dict[str, int] = {}
        self._loads: list[int] = []
        self._points: list[int] = []  # sorted ring positions
        self._owners: list[int] = []  # node index of each point
        self._assigned: dict = {}  # key -> node name
        self._total = 0
        self._seen: list[int] = []
        self._stamp = 0

    # -- membership (rebuilds the ring) ----------------------------------------------------
    def add_node(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError("node names are str")
        if name in self._index:
            return
        self._rebuild(sorted([*self._names, name]))

    def remove_node(self, name: str) -> list:
        """Remove a node; returns the keys that were assigned to it (now unassigned)."""
        if name not in self._index:
            raise KeyError(name)
        orphans = [k for k, v in self._assigned.items() if v == name]
        for k in orphans:
            del self._assigned[k]
        self._total -= len(orphans)
        self._rebuild([n for n in self._names if n != name])
        return orphans

    def _rebuild(self, names: list[str]) -> None:
        old = dict(zip(self._names, self._loads))
        ring = sorted((p, i) for i, name in enumerate(names) for p in _points(name, self.vnodes))
        self._names = names
        self._index = {n: i for i, n in enumerate(names)}
        self._loads = [old.get(n, 0) for n in names]
        self._seen = [0] * len(names)
        self._points = [p for p, _ in ring]
        self._owners = [i for _, i in ring]

    def nodes(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def _start(self, key) -> int:
        i = bisect_left(self._points, hash64(key))
        return 0 if i == len(self._points) else i

    # -- lookups -----------------------------------------------------------------------------
    def lookup(self, key) -> str:
        """The key's node by plain consistent hashing (loads ignored)."""
        if not self._names:
            raise LookupError("no nodes")
        return self._names[self._owners[self._start(key)]]

    def rank(self, key, n: int) -> list[str]:
        """Up to ``n`` distinct nodes in the key's preference order (loads ignored)."""
        count = len(self._names)
        if n > count:
            n = count
        out: list[str] = []
        if n <= 0:
            return out
        self._stamp += 1
        stamp, seen, owners, size = self._stamp, self._seen, self._owners, len(self._owners)
        c = self._start(key)
        while True:
            i = owners[c]
            if seen[i] != stamp:
                seen[i] = stamp
                out.append(self._names[i])
                if len(out) == n:
                    return out
            c += 1
            if c == size:
                c = 0

    # -- bounded-load assignment ---------------------------------------------------------
    def cap(self, extra: int = 1) -> int:
        """The most keys a node may hold when ``extra`` more are assigned."""
        if not self._names:
            raise LookupError("no nodes")
        return math.ceil((1.0 + self.eps) * (self._total + extra) / len(self._names))

    def assign(self, key) -> str:
        """Place ``key`` on its first node below the cap and count it (idempotent)."""
        name = self._assigned.get(key)
        if name is not None:
            return name
        cap = self.cap(1)
        owners, loads, size = self._owners, self._loads, len(self._owners)
        c = self._start(key)
        while loads[owners[c]] >= cap:
            c += 1
            if c == size:
                c = 0
        i = owners[c]
        loads[i] += 1
        self._total += 1
        name = self._names[i]
        self._assigned[key] = name
        return name

    def release(self, key):
        """Forget the key's assignment; returns its node, or None if it had none."""
        name = self._assigned.pop(key, None)
        if name is not None:
            self._loads[self._index[name]] -= 1
            self._total -= 1
        return name

    def assigned(self, key):
        return self._assigned.get(key)

    def load(self, name: str) -> int:
        return self._loads[self._index[name]]

    def loads(self) -> dict[str, int]:
        return dict(zip(self._names, self._loads))

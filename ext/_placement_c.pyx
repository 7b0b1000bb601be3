# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Tenant placement (hash ring + bounded loads), twin of gantry/hotpath/_placement_py.py.

Same algorithm, hash and semantics, documented there.  The ring's points, owners and the
loads are C arrays; a lookup hashes the key's UTF-8 bytes in place (no copy for str) and
binary-searches the points.
Assumes a little-endian machine (x86-64, aarch64), as the hash reads 8-byte words.
"""
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy
from libc.math cimport ceil, INFINITY

cdef uint64_t _C1 = 0x87C37B91114253D5
cdef uint64_t _C2 = 0x4CF5AD432745937F
cdef uint64_t _F1 = 0xFF51AFD7ED558CCD
cdef uint64_t _F2 = 0xC4CEB9FE1A85EC53
cdef uint64_t _SEED = 0x9E3779B97F4A7C15
cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15


cdef struct _Point:
    uint64_t pos
    int64_t owner


cdef int _cmp_points(const void* a, const void* b) noexcept nogil:
    cdef const _Point* x = <const _Point*>a
    cdef const _Point* y = <const _Point*>b
    if x.pos != y.pos:
        return -1 if x.pos < y.pos else 1
    return -1 if x.owner < y.owner else (1 if x.owner > y.owner else 0)


cdef inline uint64_t _fmix64(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= _F1
    h ^= h >> 33
    h *= _F2
    return h ^ (h >> 33)


cdef inline uint64_t _hash_bytes(const char* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = _SEED ^ (<uint64_t>n * _F1)
    cdef uint64_t w
    cdef Py_ssize_t i = 0, j, full = n & ~(<Py_ssize_t>7)
    while i < full:
        memcpy(&w, p + i, 8)
        w *= _C1
        w = (w << 31) | (w >> 33)
        w *= _C2
        h ^= w
        h = (h << 27) | (h >> 37)
        h = h * 5 + 0x52DCE729
        i += 8
    if n & 7:
        w = 0
        for j in range(n - full):
            w |= (<uint64_t>(<unsigned char>p[full + j])) << (8 * j)
        w *= _C1
        w = (w << 31) | (w >> 33)
        w *= _C2
        h ^= w
        h = (h << 27) | (h >> 37)
        h = h * 5 + 0x52DCE729
    return _fmix64(h)


cdef inline uint64_t _hash(object data) except? 0:
    cdef const char* p
    cdef Py_ssize_t n
    if type(data) is str:
        p = PyUnicode_AsUTF8AndSize(data, &n)
    elif isinstance(data, bytes):
        p = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    elif isinstance(data, str):
        p = PyUnicode_AsUTF8AndSize(data, &n)
    else:
        raise TypeError(f"keys are str or bytes, got {type(data).__name__}")
    return _hash_bytes(p, n)


def hash64(data):
    """The placement hash of a str (as UTF-8) or bytes; identical in C and Python."""
    return _hash(data)


cdef class Placement:
    """Consistent hashing with bounded loads over named nodes; see the module docstring."""

    cdef readonly double eps
    cdef readonly Py_ssize_t vnodes
    cdef list _names
    cdef dict _index
    cdef dict _assigned
    cdef uint64_t* _points
    cdef int32_t* _owners
    cdef int64_t* _loads
    cdef int64_t* _seen
    cdef int64_t _stamp, _total
    cdef Py_ssize_t _n, _size

    def __cinit__(self, eps=0.25, vnodes=160):
        self._points = NULL
        self._owners = NULL
        self._loads = NULL
        self._seen = NULL
        self._n = self._size = 0
        self._stamp = self._total = 0

    def __init__(self, eps=0.25, vnodes=160):
        cdef double e = float(eps)
        if not (0.0 <= e < INFINITY):
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not 1 <= int(vnodes) <= 65536:
            raise ValueError(f"vnodes must be in [1, 65536], got {vnodes!r}")
        self.eps = e
        self.vnodes = int(vnodes)
        self._names = []
        self._index = {}
        self._assigned = {}

    def __dealloc__(self):
        free(self._points)
        free(self._owners)
        free(self._loads)
        free(self._seen)

    # -- membership (rebuilds the ring) ----------------------------------------------------
    def add_node(self, name):
        if not isinstance(name, str):
            raise TypeError("node names are str")
        if name in self._index:
            return
        self._rebuild(sorted([*self._names, name]))

    def remove_node(self, name):
        """Remove a node; returns the keys that were assigned to it (now unassigned)."""
        if name not in self._index:
            raise KeyError(name)
        orphans = [k for k, v in self._assigned.items() if v == name]
        for k in orphans:
            del self._assigned[k]
        self._total -= len(orphans)
        self._rebuild([n for n in self._names if n != name])
        return orphans

    cdef _rebuild(self, list names):
        cdef Py_ssize_t n = len(names), i, k, v = self.vnodes, size = n * v
        old = {self._names[i]: self._loads[i] for i in range(self._n)}
        cdef int64_t* loads = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
        cdef int64_t* seen = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
        cdef uint64_t* points = <uint64_t*>malloc(max(size, 1) * sizeof(uint64_t))
        cdef int32_t* owners = <int32_t*>malloc(max(size, 1) * sizeof(int32_t))
        cdef _Point* ring = <_Point*>malloc(max(size, 1) * sizeof(_Point))
        if not (loads and seen and points and owners and ring):
            free(loads); free(seen); free(points); free(owners); free(ring)
            raise MemoryError()
        cdef uint64_t h
        for i in range(n):
            loads[i] = old.get(names[i], 0)
            seen[i] = 0
            h = _hash(names[i])
            for k in range(v):
                ring[i * v + k].pos = _fmix64(h + <uint64_t>(k + 1) * _GOLDEN)
                ring[i * v + k].owner = i
        qsort(ring, size, sizeof(_Point), _cmp_points)
        for i in range(size):
            points[i] = ring[i].pos
            owners[i] = <int32_t>ring[i].owner
        free(ring)
        free(self._points)
        free(self._owners)
        free(self._loads)
        free(self._seen)
        self._points, self._owners, self._loads, self._seen = points, owners, loads, seen
        self._names = names
        self._index = {names[i]: i for i in range(n)}
        self._n = n
        self._size = size

    def nodes(self):
        return list(self._names)

    def __len__(self):
        return self._n

    cdef inline Py_ssize_t _start(self, uint64_t h) noexcept:
        # first point >= h (bisect_left), wrapping to 0
        cdef Py_ssize_t lo = 0, hi = self._size, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._points[mid] < h:
                lo = mid + 1
            else:
                hi = mid
        return 0 if lo == self._size else lo

    # -- lookups -----------------------------------------------------------------------------
    def lookup(self, key):
        """The key's node by plain consistent hashing (loads ignored)."""
        if self._n == 0:
            raise LookupError("no nodes")
        cdef uint64_t h = _hash(key)
        return self._names[self._owners[self._start(h)]]

    def rank(self, key, Py_ssize_t n):
        """Up to ``n`` distinct nodes in the key's preference order (loads ignored)."""
        if n > self._n:
            n = self._n
        cdef list out = []
        if n <= 0:
            return out
        cdef uint64_t h = _hash(key)
        self._stamp += 1
        cdef int64_t stamp = self._stamp
        cdef Py_ssize_t got = 0, c = self._start(h)
        cdef int32_t i
        while True:
            i = self._owners[c]
            if self._seen[i] != stamp:
                self._seen[i] = stamp
                out.append(self._names[i])
                got += 1
                if got == n:
                    return out
            c += 1
            if c == self._size:
                c = 0

    # -- bounded-load assignment ---------------------------------------------------------
    def cap(self, extra=1):
        """The most keys a node may hold when ``extra`` more are assigned."""
        if self._n == 0:
            raise LookupError("no nodes")
        return int(self._cap(extra))

    cdef inline int64_t _cap(self, int64_t extra):
        return <int64_t>ceil((1.0 + self.eps) * <double>(self._total + extra) / <double>self._n)

    def assign(self, key):
        """Place ``key`` on its first node below the cap and count it (idempotent)."""
        name = self._assigned.get(key)
        if name is not None:
            return name
        if self._n == 0:
            raise LookupError("no nodes")
        cdef uint64_t h = _hash(key)
        cdef int64_t cap = self._cap(1)
        cdef Py_ssize_t c = self._start(h)
        while self._loads[self._owners[c]] >= cap:
            c += 1
            if c == self._size:
                c = 0
        cdef int32_t i = self._owners[c]
        self._loads[i] += 1
        self._total += 1
        name = self._names[i]
        self._assigned[key] = name
        return name

    def release(self, key):
        """Forget the key's assignment; returns its node, or None if it had none."""
        name = self._assigned.pop(key, None)
        if name is not None:
            self._loads[<Py_ssize_t>self._index[name]] -= 1
            self._total -= 1
        return name

    def assigned(self, key):
        return self._assigned.get(key)

    def load(self, name):
        return self._loads[<Py_ssize_t>self._index[name]]

    def loads(self):
        return {self._names[i]: self._loads[i] for i in range(self._n)}

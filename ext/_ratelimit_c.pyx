# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-key rate limiter (GCRA), compiled twin of gantry/hotpath/_ratelimit_py.py.

Same semantics, documented there.  State lives in flat C arrays indexed by slot, so a
decision is a bounds/generation check, two loads, a compare and a store: no allocation
(an admission returns a cached 0.0).  Key names live only in the dict used by ``handle``.
"""
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, realloc
from libc.math cimport INFINITY


class StaleHandle(KeyError):
    """The handle's key was swept or removed: resolve the key again."""


cdef object _ZERO = 0.0
cdef int64_t _MASK = 0xFFFFFFFF
cdef int64_t _GEN_MOD = 1 << 31


cdef inline void _params(rate, burst, double* interval, double* slack) except *:
    cdef double r = float(rate)
    cdef double b = float(burst)
    if not (0.0 < r < INFINITY):
        raise ValueError(f"rate must be positive and finite, got {rate!r}")
    if not (1.0 <= b < INFINITY):
        raise ValueError(f"burst must be >= 1 and finite, got {burst!r}")
    interval[0] = 1.0 / r
    slack[0] = interval[0] - b * interval[0]


cdef class RateLimiter:
    """GCRA limits for many keys; ``rate``/``burst`` are the defaults for new keys."""

    cdef readonly double rate, burst
    cdef double _T0, _d0
    cdef dict _index
    cdef list _keys
    cdef int64_t* _gen
    cdef double* _tat
    cdef double* _T
    cdef double* _d
    cdef uint8_t* _pinned
    cdef int64_t* _admitted
    cdef int64_t* _free
    cdef Py_ssize_t _n, _cap, _nfree, _cursor

    def __cinit__(self, rate, burst):
        self._gen = NULL
        self._tat = NULL
        self._T = NULL
        self._d = NULL
        self._pinned = NULL
        self._admitted = NULL
        self._free = NULL
        self._n = self._cap = self._nfree = self._cursor = 0

    def __init__(self, rate, burst):
        _params(rate, burst, &self._T0, &self._d0)
        self.rate = float(rate)
        self.burst = float(burst)
        self._index = {}
        self._keys = []

    def __dealloc__(self):
        free(self._gen)
        free(self._tat)
        free(self._T)
        free(self._d)
        free(self._pinned)
        free(self._admitted)
        free(self._free)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else 64
        cdef void* p
        p = realloc(self._gen, cap * sizeof(int64_t))
        if p == NULL: raise MemoryError()
        self._gen = <int64_t*>p
        p = realloc(self._tat, cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self._tat = <double*>p
        p = realloc(self._T, cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self._T = <double*>p
        p = realloc(self._d, cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self._d = <double*>p
        p = realloc(self._pinned, cap * sizeof(uint8_t))
        if p == NULL: raise MemoryError()
        self._pinned = <uint8_t*>p
        p = realloc(self._admitted, cap * sizeof(int64_t))
        if p == NULL: raise MemoryError()
        self._admitted = <int64_t*>p
        p = realloc(self._free, cap * sizeof(int64_t))
        if p == NULL: raise MemoryError()
        self._free = <int64_t*>p
        self._cap = cap
        return 0

    # -- resolving keys (off the hot path) ---------------------------------------------
    def handle(self, key):
        """The key's handle, creating the key with the default limit if it is new."""
        h = self._index.get(key)
        if h is None:
            h = self._new(key, self._T0, self._d0, 0)
        return h

    def add_key(self, key, rate, burst):
        """Create or update ``key`` with its own limit (pinned: never swept)."""
        h = self.handle(key)
        self.set_limit(h, rate, burst)
        return h

    cdef object _new(self, key, double interval, double slack, uint8_t pinned):
        cdef Py_ssize_t s
        if self._nfree:
            self._nfree -= 1
            s = self._free[self._nfree]
        else:
            if self._n == self._cap:
                self._grow()
            s = self._n
            self._n += 1
            self._gen[s] = 0
            self._keys.append(None)
        self._keys[s] = key
        self._tat[s] = -INFINITY
        self._T[s] = interval
        self._d[s] = slack
        self._pinned[s] = pinned
        self._admitted[s] = 0
        h = (self._gen[s] << 32) | s
        self._index[key] = h
        return h

    cdef inline Py_ssize_t _slot(self, int64_t h) except -1:
        cdef int64_t s = h & _MASK
        if s >= self._n or self._gen[s] != (h >> 32):
            raise StaleHandle(h)
        return s

    def set_limit(self, int64_t h, rate, burst):
        """Change the key's limit and pin it.  Its backlog, in seconds, carries over."""
        cdef Py_ssize_t s = self._slot(h)
        cdef double interval, slack
        _params(rate, burst, &interval, &slack)
        self._T[s] = interval
        self._d[s] = slack
        self._pinned[s] = 1

    def limit(self, int64_t h):
        """The key's (rate, burst), as stored (1/T and 1 - d/T, up to rounding)."""
        cdef Py_ssize_t s = self._slot(h)
        return 1.0 / self._T[s], 1.0 - self._d[s] / self._T[s]

    def key_of(self, int64_t h):
        return self._keys[self._slot(h)]

    def remove(self, key):
        h = self._index.get(key)
        if h is None:
            return False
        self._release(<int64_t>h & _MASK)
        return True

    cdef void _release(self, Py_ssize_t s) except *:
        del self._index[self._keys[s]]
        self._keys[s] = None
        self._gen[s] = (self._gen[s] + 1) % _GEN_MOD
        if self._nfree == self._cap:  # cannot happen (one entry per slot), kept for safety
            self._grow()
        self._free[self._nfree] = s
        self._nfree += 1

    def __len__(self):
        return len(self._index)

    # -- the hot path ----------------------------------------------------------------------
    def allow(self, int64_t h, double now):
        """0.0 if admitted (and counted), else the exact seconds until it would be."""
        cdef int64_t s = h & _MASK
        if s >= self._n or self._gen[s] != (h >> 32):
            raise StaleHandle(h)
        cdef double tat = self._tat[s]
        if tat < now:
            tat = now
        cdef double at = tat + self._d[s]
        if now < at:
            return at - now
        self._tat[s] = tat + self._T[s]
        self._admitted[s] += 1
        return _ZERO

    def allow_many(self, const int64_t[::1] handles, double now, double[::1] out):
        """``allow`` for each handle into ``out`` (-1.0 for a stale one); returns admitted."""
        cdef Py_ssize_t n = handles.shape[0], i
        cdef int64_t h, s
        cdef double tat, at
        cdef Py_ssize_t admitted = 0
        if out.shape[0] < n:
            raise ValueError("out is shorter than handles")
        for i in range(n):
            h = handles[i]
            s = h & _MASK
            if s >= self._n or self._gen[s] != (h >> 32):
                out[i] = -1.0
                continue
            tat = self._tat[s]
            if tat < now:
                tat = now
            at = tat + self._d[s]
            if now < at:
                out[i] = at - now
            else:
                self._tat[s] = tat + self._T[s]
                self._admitted[s] += 1
                out[i] = 0.0
                admitted += 1
        return admitted

    def peek(self, int64_t h, double now):
        """What ``allow`` would return, without counting anything."""
        cdef Py_ssize_t s = self._slot(h)
        cdef double tat = self._tat[s]
        if tat < now:
            tat = now
        cdef double at = tat + self._d[s]
        return at - now if now < at else 0.0

    # -- shared limits and housekeeping -------------------------------------------------
    def charge(self, int64_t h, double now, double n):
        """Consume ``n`` requests' worth without a decision (admissions made elsewhere)."""
        cdef Py_ssize_t s = self._slot(h)
        cdef double tat = self._tat[s]
        if tat < now:
            tat = now
        self._tat[s] = tat + n * self._T[s]

    def take_admitted(self, int64_t h):
        """Requests admitted for the key since the last call; resets the count."""
        cdef Py_ssize_t s = self._slot(h)
        cdef int64_t n = self._admitted[s]
        self._admitted[s] = 0
        return n

    def sweep(self, double now, Py_ssize_t limit=0):
        """Forget unpinned keys that are fully refilled; returns how many were freed.

        Examines ``limit`` slots from where the last sweep stopped (0: all of them), so a
        caller can bound each pause and still cover every slot over successive calls.
        """
        cdef Py_ssize_t size = self._n
        if size == 0:
            return 0
        cdef Py_ssize_t count = size if limit <= 0 or limit > size else limit
        cdef Py_ssize_t s = self._cursor % size, k, freed = 0
        for k in range(count):
            if not self._pinned[s] and self._tat[s] <= now and self._keys[s] is not None:
                self._release(s)
                freed += 1
            s += 1
            if s == size:
                s = 0
        self._cursor = s
        return freed

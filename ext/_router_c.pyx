# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Weighted, load-aware instance router, compiled twin of gantry/hotpath/_router_py.py.

Same algorithm and semantics, documented there (smooth weighted round-robin on
``weight * free`` slots, integer-only, xorshift64-staggered starts).  The live slots' score
and current ``weight * free`` (0 when not eligible, kept up to date by acquire, release and
the setters) are dense arrays in pick order, so a pick is one branch-light pass over two
short arrays with no allocation.
"""
from libc.stdint cimport int64_t, uint64_t, uint8_t, INT64_MIN
from libc.stdlib cimport free, realloc

cdef int64_t _LIMIT = 1 << 20
cdef enum:
    _FREE = 0
    _LIVE = 1
    _DRAINING = 2


cdef inline uint64_t _splitmix64(uint64_t x):
    x = x + <uint64_t>0x9E3779B97F4A7C15
    x = (x ^ (x >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * <uint64_t>0x94D049BB133111EB
    return x ^ (x >> 31)


cdef inline int _check(int64_t weight, int64_t capacity) except -1:
    if not 0 <= weight <= _LIMIT:
        raise ValueError(f"weight must be an integer in [0, 2**20], got {weight!r}")
    if not 1 <= capacity <= _LIMIT:
        raise ValueError(f"capacity must be an integer in [1, 2**20], got {capacity!r}")
    return 0


cdef class Router:
    """Pick among ready instances by weight and free capacity; see the module docstring."""

    cdef uint64_t _rng
    cdef list _ids
    cdef uint8_t* _state
    cdef uint8_t* _healthy
    cdef int64_t* _weight
    cdef int64_t* _cap
    cdef int64_t* _inflight
    cdef int64_t* _acur  # by position in _active: score
    cdef int64_t* _aeff  # by position in _active: weight * free, 0 if not eligible
    cdef int64_t* _active
    cdef int64_t* _pos
    cdef int64_t* _free
    cdef Py_ssize_t _n, _size, _nactive, _nfree

    def __cinit__(self, seed=0):
        self._state = self._healthy = NULL
        self._weight = self._cap = self._inflight = self._acur = self._aeff = NULL
        self._active = self._pos = self._free = NULL
        self._n = self._size = self._nactive = self._nfree = 0

    def __init__(self, seed=0):
        self._rng = _splitmix64(<uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)) or 1
        self._ids = []

    def __dealloc__(self):
        free(self._state)
        free(self._healthy)
        free(self._weight)
        free(self._cap)
        free(self._inflight)
        free(self._acur)
        free(self._aeff)
        free(self._active)
        free(self._pos)
        free(self._free)

    cdef void* _re(self, void* p, size_t item, Py_ssize_t size) except NULL:
        p = realloc(p, item * size)
        if p == NULL:
            raise MemoryError()
        return p

    cdef int _grow(self) except -1:
        cdef Py_ssize_t size = self._size * 2 if self._size else 16
        self._state = <uint8_t*>self._re(self._state, 1, size)
        self._healthy = <uint8_t*>self._re(self._healthy, 1, size)
        self._weight = <int64_t*>self._re(self._weight, 8, size)
        self._cap = <int64_t*>self._re(self._cap, 8, size)
        self._inflight = <int64_t*>self._re(self._inflight, 8, size)
        self._acur = <int64_t*>self._re(self._acur, 8, size)
        self._aeff = <int64_t*>self._re(self._aeff, 8, size)
        self._active = <int64_t*>self._re(self._active, 8, size)
        self._pos = <int64_t*>self._re(self._pos, 8, size)
        self._free = <int64_t*>self._re(self._free, 8, size)
        self._size = size
        return 0

    cdef inline uint64_t _next(self):
        cdef uint64_t x = self._rng
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        self._rng = x
        return x

    def add(self, instance, weight, capacity, healthy=True):
        """Add an instance (any id); returns its slot."""
        cdef int64_t w = int(weight), c = int(capacity)
        _check(w, c)
        cdef Py_ssize_t s
        if self._nfree:
            self._nfree -= 1
            s = self._free[self._nfree]
        else:
            if self._n == self._size:
                self._grow()
            s = self._n
            self._n += 1
            self._ids.append(None)
        self._ids[s] = instance
        self._state[s] = _LIVE
        self._healthy[s] = 1 if healthy else 0
        self._weight[s] = w
        self._cap[s] = c
        self._inflight[s] = 0
        cdef Py_ssize_t k = self._nactive
        self._acur[k] = <int64_t>(self._next() % <uint64_t>(w * c + 1))
        self._pos[s] = k
        self._active[k] = s
        self._nactive += 1
        self._update(s)
        return s

    cdef inline void _update(self, Py_ssize_t s) noexcept:
        cdef int64_t k = self._pos[s]
        cdef int64_t fr = self._cap[s] - self._inflight[s]
        if k < 0:
            return
        if fr <= 0 or self._weight[s] == 0 or not self._healthy[s]:
            self._aeff[k] = 0
        else:
            self._aeff[k] = self._weight[s] * fr

    cdef inline Py_ssize_t _live(self, Py_ssize_t slot) except -1:
        if not (0 <= slot < self._n) or self._state[slot] != _LIVE:
            raise KeyError(f"no live instance in slot {slot}")
        return slot

    def remove(self, Py_ssize_t slot):
        """Stop choosing the instance; the slot is reused once its in-flight drains."""
        cdef Py_ssize_t s = self._live(slot), i
        self._nactive -= 1
        cdef int64_t last = self._active[self._nactive]
        if last != s:
            i = self._pos[s]
            self._active[i] = last
            self._acur[i] = self._acur[self._nactive]
            self._aeff[i] = self._aeff[self._nactive]
            self._pos[last] = i
        self._pos[s] = -1
        self._state[s] = _DRAINING
        if self._inflight[s] == 0:
            self._free_slot(s)

    cdef void _free_slot(self, Py_ssize_t s):
        self._state[s] = _FREE
        self._ids[s] = None
        self._free[self._nfree] = s
        self._nfree += 1

    def set_weight(self, Py_ssize_t slot, weight):
        cdef Py_ssize_t s = self._live(slot)
        cdef int64_t w = int(weight)
        _check(w, self._cap[s])
        self._weight[s] = w
        self._acur[self._pos[s]] = 0
        self._update(s)

    def set_capacity(self, Py_ssize_t slot, capacity):
        cdef Py_ssize_t s = self._live(slot)
        cdef int64_t c = int(capacity)
        _check(self._weight[s], c)
        self._cap[s] = c
        self._update(s)

    def set_healthy(self, Py_ssize_t slot, healthy):
        cdef Py_ssize_t s = self._live(slot)
        if healthy and not self._healthy[s]:
            self._acur[self._pos[s]] = 0
        self._healthy[s] = 1 if healthy else 0
        self._update(s)

    def instance(self, Py_ssize_t slot):
        if not (0 <= slot < self._n) or self._state[slot] == _FREE:
            raise KeyError(f"no instance in slot {slot}")
        return self._ids[slot]

    def in_flight(self, Py_ssize_t slot):
        self.instance(slot)
        return self._inflight[slot]

    def __len__(self):
        return self._nactive

    # -- the hot path ----------------------------------------------------------------------
    cdef inline Py_ssize_t _pick(self) noexcept:
        cdef Py_ssize_t best = -1, k
        cdef int64_t best_cur = INT64_MIN, total = 0, e, c
        cdef int64_t* cur = self._acur
        cdef int64_t* eff = self._aeff
        for k in range(self._nactive):
            e = eff[k]
            if e == 0:
                continue
            c = cur[k] + e
            cur[k] = c
            total += e
            if c > best_cur:  # eligible scores are > INT64_MIN, so the first one wins
                best = k
                best_cur = c
        if best < 0:
            return -1
        cur[best] = best_cur - total
        return self._active[best]

    def pick(self):
        """The slot to send the next request to, or -1 when none is eligible."""
        return self._pick()

    def pick_acquire(self):
        """``pick`` and count one request in flight on the chosen slot."""
        cdef Py_ssize_t s = self._pick()
        if s >= 0:
            self._inflight[s] += 1
            self._update(s)
        return s

    def acquire(self, Py_ssize_t slot):
        cdef Py_ssize_t s = self._live(slot)
        self._inflight[s] += 1
        self._update(s)

    def release(self, Py_ssize_t slot):
        """One request on the slot finished (also for a removed slot still draining)."""
        if not (0 <= slot < self._n) or self._state[slot] == _FREE:
            raise KeyError(f"no instance in slot {slot}")
        if self._inflight[slot] <= 0:
            raise ValueError(f"slot {slot} has no request in flight")
        self._inflight[slot] -= 1
        if self._state[slot] == _LIVE:
            self._update(slot)
        elif self._inflight[slot] == 0:
            self._free_slot(slot)

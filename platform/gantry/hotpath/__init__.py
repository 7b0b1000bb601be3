"""The request hot path: rate limiter, weighted router, consistent-hash placement.

Each piece is a Cython extension (ext/_NAME_c.pyx -> gantry.hotpath._NAME_c) with a
pure-Python twin (_NAME_py.py) of identical behaviour; the public module (NAME.py) picks
one at import time through :func:`gantry.hotpath._select.load`.
"""

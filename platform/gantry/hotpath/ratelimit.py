"""Per-key GCRA rate limiter: the compiled module, or its pure-Python twin.

See gantry.hotpath._ratelimit_py for the semantics and the handle lifetime.
"""
from ._select import load

_impl = load("ratelimit")
RateLimiter = _impl.RateLimiter
StaleHandle = _impl.StaleHandle

__all__ = ["RateLimiter", "StaleHandle"]

"""Coordination primitives in Redis: a leader lease with a fencing epoch (more to come:
locks with fencing tokens, watched state, queues)."""
from .lease import LeaderLease

__all__ = ["LeaderLease"]

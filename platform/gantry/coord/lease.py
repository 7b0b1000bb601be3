"""A leader lease with a fencing epoch (keys.ACQUIRE_LEADER / keys.RELEASE_LEADER).

One holder at a time owns ``keys.LEADER`` (SET NX PX); each acquisition INCRs
``keys.LEADER_EPOCH``, and everything the leader makes others do carries that epoch, so a
receiver can refuse a deposed leader (the fenced scripts of keys.py, and the worker's own
check of every command).

The holder's own view is kept on the monotonic clock, never wall time: the deadline is the
moment the last *confirmed* renewal was **sent** plus the lease length.  Redis starts its
TTL when the script runs, which is later, so the holder stops believing it leads before
Redis could hand the lease to anyone else (less whatever the two clocks drift apart within
one lease, which is why leases are seconds long and renewals come every lease/3).
"""
from __future__ import annotations

import logging

from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class LeaderLease:
    def __init__(self, store, holder_id: str, lease_ms: int) -> None:
        if lease_ms <= 0:
            raise ValueError("lease_ms must be positive")
        self._store = store
        self.holder_id = holder_id
        self.lease_ms = int(lease_ms)
        self.epoch = 0                      # epoch of the lease held, 0 when not held
        self._deadline = float("-inf")      # monotonic: leadership ends here unless renewed
        self._last_try = float("-inf")      # monotonic: when acquire_or_renew last ran

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: a third of the lease."""
        return self.lease_ms / 3000.0

    def renew_due(self, now_monotonic: float) -> bool:
        return now_monotonic - self._last_try >= self.renew_every

    def is_leader(self, now_monotonic: float) -> bool:
        """True while a renewal confirmed less than one lease ago (by when it was sent)."""
        return self.epoch > 0 and now_monotonic < self._deadline

    def deadline(self) -> float:
        return self._deadline

    async def acquire_or_renew(self, now_monotonic: float) -> int:
        """Take the lease if free, or extend it if held.  Returns the epoch held, or 0.

        ``now_monotonic`` must be read *before* the call (time.monotonic()).  A Redis error
        changes nothing: a leader stays leader only until its current deadline passes.
        """
        self._last_try = now_monotonic
        try:
            epoch = await self._store.acquire_leader(self.holder_id, self.lease_ms)
        except (RedisError, OSError) as exc:
            log.warning("lease %s: renewal failed (%s); leader until the deadline at most",
                        self.holder_id, exc)
            return self.epoch if self.is_leader(now_monotonic) else 0
        if epoch > 0:
            if epoch != self.epoch:
                log.info("lease %s: leader with epoch %d", self.holder_id, epoch)
            self.epoch = epoch
            self._deadline = now_monotonic + self.lease_ms / 1000.0
        else:
            if self.epoch:
                log.info("lease %s: lost leadership (epoch %d)", self.holder_id, self.epoch)
            self.epoch = 0
            self._deadline = float("-inf")
        return epoch

    async def release(self) -> bool:
        """Give the lease up now (if still ours) so a standby takes over without waiting."""
        self.epoch = 0
        self._deadline = float("-inf")
        try:
            return await self._store.release_leader(self.holder_id)
        except (RedisError, OSError) as exc:
            log.warning("lease %s: release failed (%s); it expires by itself", self.holder_id, exc)
            return False

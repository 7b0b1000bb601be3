"""Per-minute metrics rows in Redis (keys in gantry.keys, "metrics")."""
from __future__ import annotations

from .. import keys
from ..state import decode_hash
from ..store import ScriptRunner
from .model import PEAKS, SEP, Key, scopes

_KEY = {"function": keys.metrics_function, "tenant": keys.metrics_tenant}


class MetricsStore(ScriptRunner):

    async def add(self, taken: dict[Key, dict[str, int]], retention: float) -> int:
        """Add a gateway's rows (gantry.metrics.model.Rows.take) to the hour hashes of their
        functions and tenants, all in one script; each expires RETENTION seconds after its
        hour ends.  Returns the number of fields changed."""
        keys_: list[str] = []
        argv: list[str] = []
        for (kind, scope, hour), fields in sorted(scopes(taken).items()):
            adds, peaks = [], []
            for field, amount in fields.items():
                (peaks if field.partition(SEP)[2] in PEAKS else adds).extend((field, str(int(amount))))
            keys_.append(_KEY[kind](scope, hour))
            argv += [str(int((hour + 1) * 3600 + retention)), str(len(adds) // 2), str(len(peaks) // 2),
                     *adds, *peaks]
        if not keys_:
            return 0
        return int(await self._run(keys.METRICS_ADD, keys_, argv))

    async def hours(self, kind: str, scope: str, hours: list[int]) -> dict[int, dict[str, str]]:
        """The stored hash of each hour of a function (KIND "function", SCOPE its qualified
        name) or tenant ("tenant", its id): one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(_KEY[kind](scope, hour))
        return {hour: decode_hash(raw) for hour, raw in zip(hours, await pipe.execute()) if raw}

"""Usage buckets and the audit stream in Redis (keys in gantry.keys, "usage and audit")."""
from __future__ import annotations

import json
import time
from typing import Any

from .. import keys
from ..state import Instance, decode_hash
from ..store import ScriptRunner
from ..tenants.model import split
from .model import RETENTION_DAYS, SEP, WHOLE, day_of

TTL = RETENTION_DAYS * 86400
AUDIT_MAXLEN = 100_000         # entries kept (approximately: XADD MAXLEN ~)
AUDIT_PAGE = 1000              # entries read per XRANGE while filtering by tenant
AUDIT_SCAN = 10_000            # at most this many entries looked at per call


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def accrue(runner: ScriptRunner, inst: Instance, now: float | None = None) -> float:
    """Add the instance's reserved resource-seconds since its last accrual to its tenant's
    bucket of the day of NOW (keys.ACCRUE_INSTANCE), on any store's connection (Store.reap
    calls it just before it releases the capacity).  Returns the seconds accrued now."""
    now = time.time() if now is None else now
    tenant, bare = split(inst.function)
    return float(await runner._run(keys.ACCRUE_INSTANCE,
                                   [keys.instance(inst.id), keys.usage_day(tenant, day_of(now))],
                                   [repr(now), str(TTL), inst.function, bare]))


class UsageStore(ScriptRunner):

    async def add(self, counts: dict[tuple[str, str], dict[str, float]], day: str) -> int:
        """Add COUNTS ((tenant, bare function) -> counter -> amount) to DAY's buckets, all in
        one script.  Returns the number of fields changed."""
        by_tenant: dict[str, list[str]] = {}
        for (tenant, name), row in counts.items():
            args = by_tenant.setdefault(tenant, [])
            for counter, amount in row.items():
                if amount:
                    args += [f"{name}{SEP}{counter}", "i" if counter in WHOLE else "f",
                             str(int(amount)) if counter in WHOLE else repr(float(amount))]
        keys_, argv = [], [str(TTL)]
        for tenant, args in sorted(by_tenant.items()):
            if args:
                keys_.append(keys.usage_day(tenant, day))
                argv += [str(len(args) // 3), *args]
        if not keys_:
            return 0
        return int(await self._run(keys.USAGE_ADD, keys_, argv))

    async def accrue(self, inst: Instance, now: float | None = None) -> float:
        return await accrue(self, inst, now)

    async def buckets(self, tenant: str, days: list[str]) -> list[dict[str, str]]:
        """The tenant's bucket of each day (empty where nothing was counted), one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(keys.usage_day(tenant, day))
        return [decode_hash(raw) for raw in await pipe.execute()]


class AuditStore(ScriptRunner):

    async def append(self, *, time_: float, actor: str, tenant: str, action: str, target: str,
                     detail: dict[str, Any]) -> str:
        entry = {"time": repr(time_), "actor": actor, "tenant": tenant, "action": action, "target": target,
                 "detail": json.dumps(detail, separators=(",", ":"), default=str)}
        return _text(await self.redis.xadd(keys.AUDIT, entry, maxlen=AUDIT_MAXLEN, approximate=True))

    async def read(self, tenant: str | None, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Entries of TENANT (None: all), oldest first.  With AFTER (a stream id, exclusive):
        the first LIMIT after it; without: the latest LIMIT.  At most AUDIT_SCAN entries are
        looked at per call, so a tenant filter over a long stream answers in bounded time.
        Returns (entries, cursor): pass the cursor as AFTER to read on (None: nothing read)."""
        out: list[dict[str, Any]] = []
        scanned, cursor = 0, after
        forward = after is not None
        bound = f"({after}" if forward else "+"
        while len(out) < limit and scanned < AUDIT_SCAN:
            count = AUDIT_PAGE if tenant else limit - len(out)
            if forward:
                page = await self.redis.xrange(keys.AUDIT, min=bound, max="+", count=count)
            else:
                page = await self.redis.xrevrange(keys.AUDIT, max=bound, min="-", count=count)
            if not page:
                break
            for raw_id, fields in page:
                scanned += 1
                entry_id = _text(raw_id)
                bound = f"({entry_id}"
                entry = _entry(entry_id, decode_hash(fields))
                if tenant is None or entry["tenant"] == tenant:
                    out.append(entry)
                    if forward:
                        cursor = entry_id
                    if len(out) == limit:
                        break
                if forward and tenant is not None:
                    cursor = entry_id      # skipped entries need not be looked at again
        if not forward:
            out.reverse()
            cursor = out[-1]["id"] if out else None
        return out, cursor


def _entry(entry_id: str, raw: dict[str, str]) -> dict[str, Any]:
    try:
        detail = json.loads(raw.get("detail") or "{}")
    except ValueError:
        detail = {}
    return {"id": entry_id, "time": float(raw.get("time") or 0), "actor": raw.get("actor", ""),
            "tenant": raw.get("tenant", ""), "action": raw.get("action", ""), "target": raw.get("target", ""),
            "detail": detail if isinstance(detail, dict) else {}}

"""The one owner of the control plane's Redis operations (arq's ``ArqRedis`` is the model).

Every component builds one :class:`Store` over its Redis client and reads and writes the
shared records only through it: callers never build Redis commands or evaluate scripts.
``gantry.keys`` stays the specification of every key and Lua script; the store registers
each script once and runs it by EVALSHA (redis-py loads it again after a Redis restart).

Fenced writes (the scheduler's) raise :class:`Deposed` when Redis refuses the sender's epoch,
so a stale epoch surfaces one way only: the caller stops acting.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import TimeoutError as _RedisTimeoutError
from redis.exceptions import WatchError

from . import keys
from .manifest import FunctionSpec, ManifestError
from .state import Function, Instance, InstanceState, Node, decode_hash, pack, unpack
from .tenants.model import split
from .tenants.quota import QuotaExceeded


class Deposed(Exception):
    """A fenced write was refused: a newer leader exists; stop acting at once."""


# What a Store method raises when Redis cannot be reached or does not answer in time: the
# caller's answer is "unavailable, retry later" (the gateway's 503), never a crash.
UNAVAILABLE: tuple[type[Exception], ...] = (_RedisConnectionError, _RedisTimeoutError)


class UnreadableRecord(ValueError):
    """A function's stored record cannot be decoded or no longer validates (corrupt bytes, a
    spec written past validation or by an older Gantry).  It concerns that one function:
    callers mark it and go on with the others.  str() names the function, version and field."""


class StartFailure(NamedTuple):
    """The function's last failed start (keys.SET_START_FAILED)."""
    version: int
    cause: str


class RoutingView(NamedTuple):
    """What the gateway routes a function's requests by (``Store.routing_view``)."""
    version: int | None
    ids: set[str]
    pending_reason: str
    start_failed: StartFailure | None
    pending_quota: str = ""     # "RESOURCE CURRENT LIMIT" when the tenant's quota is why it waits


def _start_failure(raw: dict[str, str]) -> StartFailure | None:
    cause, version = raw.get("start_failed"), raw.get("start_failed_version", "")
    if not cause:
        return None
    try:
        return StartFailure(int(version), cause)
    except ValueError:
        return StartFailure(0, cause)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flat(fields: dict[str, Any] | None) -> list[str]:
    out: list[str] = []
    for k, v in (fields or {}).items():
        out += [k, str(v)]
    return out


def _states(states: Iterable[str] | None) -> str:
    return " ".join(sorted(states)) if states else ""


class ScriptRunner:
    """A Redis client and the scripts of gantry.keys run on it: each registered on first use
    and run by EVALSHA (redis-py loads it again when a Redis restart flushed the cache).  The
    base of every store: only stores evaluate scripts."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self._scripts: dict[str, Any] = {}

    def _script(self, script: str):
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = self.redis.register_script(script)
        return registered

    async def _run(self, script: str, keys_: list[str], args: list[Any]) -> Any:
        return await self._script(script)(keys=keys_, args=args)


class Store(ScriptRunner):

    async def _fenced(self, script: str, keys_: list[str], args: list[Any], what: str) -> int:
        result = int(await self._run(script, keys_, args))
        if result == 0:
            raise Deposed(what)
        return result

    # --- leadership (gantry.coord.LeaderLease) -------------------------------------------

    async def acquire_leader(self, holder: str, lease_ms: int) -> int:
        """Take the lease if free (a new epoch) or renew ours; the epoch held, or 0."""
        return int(await self._run(keys.ACQUIRE_LEADER, [keys.LEADER, keys.LEADER_EPOCH], [holder, lease_ms]))

    async def release_leader(self, holder: str) -> bool:
        return bool(await self._run(keys.RELEASE_LEADER, [keys.LEADER], [holder]))

    async def fence_floor(self) -> tuple[str, int]:
        """(data generation, leader epoch): a command is current if its epoch is at least
        the epoch, within the generation (which changes only when Redis lost its data)."""
        generation, epoch = await self._run(keys.FENCE_FLOOR, [keys.GENERATION, keys.LEADER_EPOCH],
                                            [secrets.token_hex(8)])
        return _text(generation), int(epoch)

    def events(self):
        """A pub/sub connection for keys.EVENTS hints (the caller subscribes and closes it)."""
        return self.redis.pubsub(ignore_subscribe_messages=True)

    async def admin_key_hash(self) -> str | None:
        raw = await self.redis.get(keys.ADMIN_KEY_HASH)
        return raw.decode().strip().lower() if raw else None

    async def set_admin_key_hash(self, key_hash: str) -> None:
        await self.redis.set(keys.ADMIN_KEY_HASH, key_hash)

    async def claim_admin_key_hash(self, key_hash: str) -> bool:
        """Set the admin key's hash only if there is none yet (SET NX); True if it was set."""
        return bool(await self.redis.set(keys.ADMIN_KEY_HASH, key_hash, nx=True))

    # --- reads ---------------------------------------------------------------------------

    async def get_function(self, name: str) -> Function | None:
        """A function and its latest version's spec and image (None if not deployed).
        Raises UnreadableRecord if its record or that version's cannot be read."""
        raw = await self.function_fields(name)
        if not raw or "latest" not in raw:
            return None
        try:
            latest = int(raw["latest"])
            active = int(raw.get("active", latest))
            updated, min_override = float(raw.get("updated", 0)), int(raw.get("min_override", -1))
            scaling = {"warm": int(raw.get("warm", 0)), "warm_until": float(raw.get("warm_until", 0)),
                       "scale_target": int(raw.get("scale_target", -1)),
                       "scaled_up_at": float(raw.get("scaled_up_at", 0)), "scaled_at": float(raw.get("scaled_at", 0))}
        except ValueError as exc:
            raise UnreadableRecord(f"{name}: function record: {exc}") from None
        version = await self.get_version(name, latest)
        if version is None:
            return None
        image, spec = version
        return Function(name=name, latest=latest, active=active, spec=spec, image=image, updated=updated,
                        min_override=min_override, pending_reason=raw.get("pending_reason", ""), **scaling)

    async def function_fields(self, name: str) -> dict[str, str]:
        """The function's record as stored, undecoded beyond text (what is left to show of a
        function whose spec is unreadable)."""
        return decode_hash(await self.redis.hgetall(keys.function(name)))

    async def get_version(self, name: str, version: int) -> tuple[str, FunctionSpec] | None:
        """A version's (image, spec); None if absent.  Raises UnreadableRecord."""
        raw = await self.redis.hgetall(keys.function_version(name, version))
        if not raw:
            return None
        return _decode_version(name, version, raw)

    async def function_names(self) -> list[str]:
        return sorted(_text(n) for n in await self.redis.smembers(keys.FUNCTIONS))

    async def load_reports(self, name: str) -> dict:
        """Each gateway's last load report of the function (raw: gantry.scheduler.autoscale reads it)."""
        return await self.redis.hgetall(keys.function_load(name))

    async def read_logs(self, name: str, after: str | None, limit: int, *, since_ms: int | None = None) -> list:
        """Entries of the function's log stream strictly after the cursor ``after`` (and from
        ``since_ms`` on, when that is later), oldest first."""
        low = f"({after}" if after else "-"
        if since_ms is not None and (not after or (since_ms, 0) > _id_tuple(after)):
            low = str(since_ms)
        return await self.redis.xrange(keys.function_logs(name), min=low, max="+", count=limit)

    async def read_logs_back(self, name: str, before: str | None, limit: int, *, after: str | None = None,
                             since_ms: int | None = None) -> list:
        """Entries strictly before ``before`` (None: from the newest), newest first, down to
        (not including) ``after`` and from ``since_ms`` on."""
        low = f"({after}" if after else "-"
        if since_ms is not None and (not after or (since_ms, 0) > _id_tuple(after)):
            low = str(since_ms)
        return await self.redis.xrevrange(keys.function_logs(name), max=f"({before}" if before else "+",
                                          min=low, count=limit)

    async def routing_view(self, name: str) -> RoutingView:
        """The version that takes traffic (active, else latest; None while the function is
        absent or half-written), the function's instance ids, why wanted instances wait
        (pending_reason, "" when they do not) and the last failed start, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.function(name))
        pipe.smembers(keys.function_instances(name))
        raw, ids = await pipe.execute()
        pointer = raw.get(b"active") or raw.get(b"latest")
        return RoutingView((int(pointer) if pointer else None), {_text(i) for i in ids},
                           _text(raw.get(b"pending_reason", b"")), _start_failure(decode_hash(raw)),
                           _text(raw.get(b"pending_quota", b"")))

    async def start_failure(self, name: str) -> StartFailure | None:
        """Why the function's last start failed, while no instance of that version (or a
        newer one) has been ready since; None otherwise."""
        cause, version = await self.redis.hmget(keys.function(name), "start_failed", "start_failed_version")
        return _start_failure({"start_failed": _text(cause or b""), "start_failed_version": _text(version or b"")})

    async def report_load(self, gateway: str, records: dict[str, bytes], ttl: int, demand: bool = False) -> None:
        """This gateway's load record per function (expiring after ``ttl`` s); with ``demand``
        also a "demand:NAME" hint per function, so the scheduler acts at once."""
        pipe = self.redis.pipeline(transaction=False)
        for name, record in records.items():
            pipe.hset(keys.function_load(name), gateway, record)
            pipe.expire(keys.function_load(name), ttl)
            if demand:
                pipe.publish(keys.EVENTS, f"demand:{name}")
        await pipe.execute()

    async def get_instance(self, instance_id: str) -> Instance | None:
        return Instance.from_hash(await self.redis.hgetall(keys.instance(instance_id)))

    async def get_instances(self, ids: Iterable[Any]) -> list[Instance]:
        """The records of ``ids`` that exist, in order."""
        ids = [_text(i) for i in ids]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for instance_id in ids:
            pipe.hgetall(keys.instance(instance_id))
        found = [Instance.from_hash(raw) for raw in await pipe.execute()]
        return [inst for inst in found if inst is not None]

    async def instance_ids(self, *, function: str | None = None, node: str | None = None) -> set[str]:
        """The ids in the function's (or else the node's) instance set."""
        return (await self.instance_sets([(function, node)]))[0]

    async def instance_sets(self, owners: list[tuple[str | None, str | None]]) -> list[set[str]]:
        """For each (function, node) pair: the function's instance set, or else the node's."""
        pipe = self.redis.pipeline(transaction=False)
        for function, node in owners:
            pipe.smembers(keys.function_instances(function) if function is not None
                          else keys.node_instances(node or ""))
        return [{_text(i) for i in members} for members in await pipe.execute()] if owners else []

    async def instance_state(self, instance_id: str) -> str | None:
        raw = await self.redis.hget(keys.instance(instance_id), "state")
        return None if raw is None else _text(raw)

    async def instance_nodes(self, ids: list[str]) -> list[str | None]:
        """The node each instance record is placed on (None: no record)."""
        pipe = self.redis.pipeline(transaction=False)
        for instance_id in ids:
            pipe.hget(keys.instance(instance_id), "node")
        return [None if raw is None else _text(raw) for raw in await pipe.execute()] if ids else []

    async def function_instances(self, name: str) -> list[Instance]:
        return await self.get_instances(await self.instance_ids(function=name))

    async def node_ids(self) -> list[str]:
        return sorted(_text(i) for i in await self.redis.smembers(keys.NODES))

    async def live_nodes(self) -> list[Node]:
        ids = await self.node_ids()
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for node_id in ids:
            pipe.exists(keys.node_alive(node_id))
            pipe.hgetall(keys.node(node_id))
        results = await pipe.execute()
        nodes = []
        for alive, raw in zip(results[::2], results[1::2]):
            node = Node.from_hash(raw) if alive else None
            if node:
                nodes.append(node)
        return nodes

    async def _alloc_hashes(self, node_ids: list[str]) -> list[dict]:
        """Each node's alloc hash (keys.node_alloc), in one round trip."""
        if not node_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.hgetall(keys.node_alloc(node_id))
        return await pipe.execute()

    async def node_allocations(self, node_ids: list[str]) -> list[tuple[int, int]]:
        """(cpu millicores, memory bytes) the scheduler has reserved on each node."""
        return [(_int(raw, b"cpu"), _int(raw, b"memory")) for raw in await self._alloc_hashes(node_ids)]

    # --- nodes (the worker) ------------------------------------------------------------------

    async def heartbeat(self, node: Node, ttl: float) -> None:
        """Refresh node_alive (and the node record, so a pruned node comes back whole)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.node(node.id), mapping=node.to_hash())
        pipe.sadd(keys.NODES, node.id)
        pipe.set(keys.node_alive(node.id), str(time.time()), px=max(1, int(ttl * 1000)))
        await pipe.execute()

    async def announce_node(self, node_id: str) -> None:
        await self.redis.publish(keys.EVENTS, f"node:{node_id}")

    async def deregister_node(self, node_id: str) -> None:
        await self.redis.delete(keys.node_alive(node_id))
        await self.announce_node(node_id)

    async def pop_commands(self, node_id: str, block: float, batch: int) -> list[bytes]:
        """Up to ``batch`` of the node's queued commands, oldest first, waiting up to ``block``
        seconds for the first (0: no wait)."""
        key = keys.node_commands(node_id)
        raws: list[bytes] = []
        if block > 0:
            got = await self.redis.brpop([key], timeout=block)
            if not got:
                return []
            raws.append(got[1])
        more = await self.redis.rpop(key, batch - len(raws))
        return raws + list(more or [])

    async def append_logs(self, items: list[tuple[str, str, str]], maxlen: int) -> None:
        """(function, instance, line) appended to each function's capped log stream, in one
        round trip; lines of a function that no longer exists are dropped (keys.APPEND_LOGS)."""
        by_function: dict[str, list[str]] = {}
        for function, instance, line in items:
            by_function.setdefault(function, []).extend((instance, line))
        script = self._script(keys.APPEND_LOGS)
        pipe = self.redis.pipeline(transaction=False)
        for function, pairs in by_function.items():
            await script(keys=[keys.function(function), keys.function_logs(function)], args=[maxlen, *pairs],
                         client=pipe)
        await pipe.execute()

    # --- instance states (the worker's compare-and-set) -----------------------------------

    async def move_instance(self, instance_id: str, to: InstanceState | None = None,
                            expect: Iterable[str] | None = None, **fields: Any) -> bool:
        """Move the instance to ``to`` (None: only set ``fields``) if its record exists, the
        transition table allows the move and, with ``expect``, its state is one of those.
        Announced on keys.EVENTS.  False if refused."""
        return bool(await self._run(keys.MOVE_INSTANCE, [keys.instance(instance_id), keys.EVENTS],
                                    [to or "", _states(expect), *_flat(fields)]))

    # --- the scheduler's fenced writes (raise Deposed) -----------------------------------

    async def create_instance(self, epoch: int, inst: Instance, start_command: bytes) -> None:
        """The placed instance's record, its set memberships and its start command, at once."""
        await self._fenced(
            keys.CREATE_INSTANCE,
            [keys.LEADER_EPOCH, keys.instance(inst.id), keys.function_instances(inst.function),
             keys.node_instances(inst.node), keys.node_commands(inst.node)],
            [epoch, inst.id, start_command, *_flat(inst.to_hash())], inst.function)

    async def command_instance(self, epoch: int, inst: Instance, command: bytes, to: InstanceState | None = None,
                               expect: Iterable[str] | None = None, fields: dict[str, Any] | None = None) -> bool:
        """Move the instance to ``to`` (as move_instance) with ``fields`` and queue ``command``
        on its node.  False if the record is gone or the move is not allowed."""
        return await self._fenced(
            keys.COMMAND_INSTANCE,
            [keys.LEADER_EPOCH, keys.instance(inst.id), keys.node_commands(inst.node), keys.EVENTS],
            [epoch, to or "", _states(expect), command, *_flat(fields)], inst.function) == 1

    async def promote_version(self, epoch: int, name: str, latest: int, active: int, now: float) -> bool:
        """Move ``active`` to ``latest`` if both are still what the caller decided on."""
        return await self._fenced(
            keys.PROMOTE_VERSION, [keys.LEADER_EPOCH, keys.function(name), keys.EVENTS],
            [epoch, name, str(latest), str(active), repr(now)], name) == 1

    # --- capacity --------------------------------------------------------------------------

    async def reserve(self, node_id: str, cpu: int, memory: int, tenant: str | None = None,
                      gpus: int = 0) -> bool:
        """Reserve capacity on a live node if it fits (atomic in Redis) and, with ``tenant``,
        the tenant's usage in the same script.  Raises QuotaExceeded when the tenant's quota
        refuses (no other node would do: the caller stops trying)."""
        node_keys = [keys.node(node_id), keys.node_alloc(node_id), keys.node_alive(node_id)]
        if tenant is None:
            return bool(await self._run(keys.RESERVE_CAPACITY, node_keys, [cpu, memory]))
        reply = await self._run(keys.RESERVE_CAPACITY,
                                node_keys + [keys.tenant_used(tenant), keys.tenant_quota(tenant)],
                                [cpu, memory, gpus])
        if isinstance(reply, list):
            raise QuotaExceeded.from_reply(tenant, reply)
        return bool(reply)

    async def reserve_gpus(self, epoch: int, node_id: str, cpu: int, memory: int, count: int, share: int,
                           types: tuple[str, ...] = (), tenant: str | None = None) -> list[tuple[str, int]] | None:
        """Lease COUNT whole GPUs or SHARE bytes of one (keys.RESERVE_GPU_CAPACITY chooses
        which, by TYPES) with the node's CPU and memory and the tenant's usage, at once; the
        lease [(uuid, bytes)], or None if it does not fit.  Raises Deposed for a stale epoch
        and QuotaExceeded when the tenant's quota refuses."""
        node_keys = [keys.LEADER_EPOCH, keys.node(node_id), keys.node_alloc(node_id), keys.node_alive(node_id)]
        if tenant is not None:
            node_keys += [keys.tenant_used(tenant), keys.tenant_quota(tenant)]
        reply = await self._run(keys.RESERVE_GPU_CAPACITY, node_keys,
                                [epoch, cpu, memory, count, share, *(t.lower() for t in types)])
        if reply == -1:
            raise Deposed(f"GPU lease on {node_id}")
        if not isinstance(reply, list):
            return None
        if _text(reply[0]) != "lease":
            raise QuotaExceeded.from_reply(tenant, reply)
        items = [_text(x) for x in reply[1:]]
        return [(items[i], int(items[i + 1])) for i in range(0, len(items), 2)]

    async def node_gpu_leases(self, node_ids: list[str]) -> list[dict[str, int]]:
        """uuid -> bytes leased, for each node (the "gpu:UUID" fields of its alloc hash)."""
        out = []
        for raw in await self._alloc_hashes(node_ids):
            leases = {}
            for k, v in raw.items():
                field = _text(k)
                if field.startswith("gpu:") and int(v) > 0:
                    leases[field[4:]] = int(v)
            out.append(leases)
        return out

    async def unreserve(self, node_id: str, cpu: int, memory: int, tenant: str | None = None,
                        gpus: int = 0, lease: list[tuple[str, int]] | None = None) -> None:
        """Give back a reservation that no instance record took over (MULTI), the tenant's
        usage with it when it was reserved for ``tenant``, and its GPU ``lease``."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(keys.node_alloc(node_id), "cpu", -cpu)
        pipe.hincrby(keys.node_alloc(node_id), "memory", -memory)
        for uuid, n in lease or ():
            pipe.hincrby(keys.node_alloc(node_id), f"gpu:{uuid}", -n)
        if tenant is not None:
            used = keys.tenant_used(tenant)
            for field, amount in (("instances", 1), ("cpu", cpu), ("memory", memory), ("gpus", gpus)):
                pipe.hincrby(used, field, -amount)
        await pipe.execute()

    async def reap(self, inst: Instance, release: bool = True) -> None:
        """Release the instance's capacity (once: RELEASE_CAPACITY's guard) and delete its
        record and set memberships.  Safe to repeat after a crash between the two steps.
        ``release=False`` on a dead node: its whole alloc record is dropped instead, and a
        release after that drop would leave a negative allocation behind; the tenant's usage
        is given back either way (it is not the node's).  The instance's reserved
        resource-seconds are accrued to its tenant's usage first (once: accrual stops at the
        release)."""
        from .usage.store import accrue     # here: gantry.usage.store builds on this module
        await accrue(self, inst)
        await self._run(keys.RELEASE_CAPACITY,
                        [keys.node_alloc(inst.node), keys.instance(inst.id),
                         keys.tenant_used(split(inst.function)[0])],
                        ["node" if release else "tenant"])
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.instance(inst.id))
        pipe.srem(keys.function_instances(inst.function), inst.id)
        pipe.srem(keys.node_instances(inst.node), inst.id)
        await pipe.execute()

    async def forget_ids(self, function: str | None, node: str | None, ids: list[str]) -> None:
        """Drop set members whose instance record no longer exists."""
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        if function:
            pipe.srem(keys.function_instances(function), *ids)
        if node:
            pipe.srem(keys.node_instances(node), *ids)
        await pipe.execute()

    async def forget_node(self, node_id: str, everything: bool) -> bool:
        """Drop a dead node's capacity record (everything=False) or the node itself (True),
        only while its alive key is still absent."""
        return bool(await self._run(
            keys.FORGET_NODE,
            [keys.node_alive(node_id), keys.node_alloc(node_id), keys.NODES, keys.node(node_id),
             keys.node_instances(node_id), keys.node_commands(node_id)],
            [node_id, "all" if everything else "alloc"]))

    async def set_pending_reason(self, name: str, reason: str, quota: str = "") -> bool:
        """Why the function's wanted instances wait ("" none); ``quota``: "RESOURCE CURRENT
        LIMIT" when its tenant's quota is why (QuotaExceeded.encode)."""
        return bool(await self._run(keys.SET_PENDING_REASON, [keys.function(name), keys.EVENTS],
                                    [name, reason, quota]))

    async def set_start_failed(self, name: str, version: int, cause: str) -> bool:
        """Record why VERSION's start failed (the failed instance's reason); True if it changed."""
        return bool(await self._run(keys.SET_START_FAILED, [keys.function(name), keys.EVENTS],
                                    [name, str(version), cause or "failed before it was ready"]))

    async def clear_start_failed(self, name: str, version: int) -> bool:
        """An instance of VERSION is ready: forget a failed start of it or an older version."""
        return bool(await self._run(keys.SET_START_FAILED, [keys.function(name), keys.EVENTS],
                                    [name, str(version), ""]))

    # --- functions (the admin API) ---------------------------------------------------------

    async def deploy_version(self, spec: FunctionSpec, image: str) -> tuple[int, int]:
        """Register a new version of the function (spec.qualified): returns (version, active
        version).  Raises QuotaExceeded when it is a new function and its tenant has as many
        as its ``functions`` quota (nothing is left written)."""
        name = spec.qualified
        version = int(await self.redis.incr(keys.function_seq(name)))
        now = time.time()
        active = await self._run(
            keys.DEPLOY_VERSION,
            [keys.function(name), keys.FUNCTIONS, keys.EVENTS, keys.function_version(name, version),
             keys.function_seq(name), keys.tenant_functions(spec.tenant), keys.tenant_quota(spec.tenant)],
            [name, str(version), str(now), image, pack(spec.to_dict())])
        if isinstance(active, list):
            raise QuotaExceeded.from_reply(spec.tenant, active)
        return version, int(active)

    async def delete_function(self, name: str) -> bool:
        """Remove fn:NAME, its versions and its FUNCTIONS membership in one WATCH/MULTI (the
        scheduler drains the instances it finds without a function).  False if absent."""
        key = keys.function(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    latest = await pipe.hget(key, "latest")
                    if latest is None:
                        await pipe.reset()
                        await self.redis.srem(keys.FUNCTIONS, name)   # a stray membership
                        await self.redis.srem(keys.tenant_functions(split(name)[0]), name)
                        return False
                    pipe.multi()
                    pipe.delete(key, *[keys.function_version(name, v) for v in range(1, int(latest) + 1)],
                                keys.function_logs(name))          # its logs go with it
                    pipe.delete(keys.function_decisions(name))               # and its decisions
                    pipe.srem(keys.FUNCTIONS, name)
                    pipe.srem(keys.tenant_functions(split(name)[0]), name)   # its `functions` use
                    pipe.publish(keys.EVENTS, f"fn:{name}")
                    await pipe.execute()
                    return True
                except WatchError:  # a deploy raced us: look again
                    continue

    async def update_function(self, name: str, **fields: Any) -> bool:
        """Set fields of an existing function and announce it.  False if it does not exist."""
        return bool(await self._run(keys.UPDATE_FUNCTION, [keys.function(name), keys.EVENTS],
                                    [name, str(time.time()), *_flat(fields)]))

    # --- pre-created containers (worker/spares.py) -------------------------------------------

    async def take_spare(self, epoch: int, node_id: str, function: str, version: int) -> str | None:
        """The instance id of the node's pre-created container of FUNCTION at VERSION, taken
        (no other placement gets it); None when there is none.  Raises Deposed."""
        got = await self._run(keys.TAKE_SPARE, [keys.LEADER_EPOCH, keys.node_spares(node_id)],
                              [epoch, function, str(version)])
        if got == 0:
            raise Deposed(function)
        got = got.decode() if isinstance(got, bytes) else str(got)
        return got or None

    async def offer_spare(self, node_id: str, function: str, entry: str) -> None:
        await self.redis.hset(keys.node_spares(node_id), function, entry)

    async def withdraw_spare(self, node_id: str, function: str, entry: str) -> bool:
        """True if the entry was still offered (now withdrawn), False if it was taken."""
        return bool(await self._run(keys.WITHDRAW_SPARE, [keys.node_spares(node_id)], [function, entry]))

    async def clear_spares(self, node_id: str) -> None:
        await self.redis.delete(keys.node_spares(node_id))


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _decode_version(name: str, version: int, raw: dict) -> tuple[str, FunctionSpec]:
    where = f"{name} v{version}"
    if b"image" not in raw or b"spec" not in raw:
        raise UnreadableRecord(f"{where}: version record without {'image' if b'spec' in raw else 'spec'}")
    try:
        image, data = raw[b"image"].decode(), unpack(raw[b"spec"])
    except Exception as exc:    # msgpack raises a dozen kinds; any of them means unreadable bytes
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise UnreadableRecord(f"{where}: spec: not readable ({why})") from None
    try:
        return image, FunctionSpec.from_dict(data, source=where)
    except ManifestError as exc:
        raise UnreadableRecord(str(exc)) from None


def _int(raw: dict, field: bytes) -> int:
    try:
        return int(raw.get(field, 0))
    except (TypeError, ValueError):
        return 0

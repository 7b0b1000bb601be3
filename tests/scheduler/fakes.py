"""Test helpers: nodes, deploys, load reports and a fake worker, all straight in Redis.

The fake worker pops commands from a node's list and moves instance states the way the
real worker does (Store.move_instance: compare-and-set against the transition table),
refusing stale epochs; the real worker is tested elsewhere.  ``set_state`` writes a state
directly, as a test's shortcut past the table."""
from __future__ import annotations

import time

import msgpack

from gantry import keys, state
from gantry.manifest import FunctionSpec, Resources, Scaling
from gantry.scheduler import Scheduler, SchedulerSettings
from gantry.store import Store

MiB = 2**20
GiB = 2**30


def settings(holder: str = "s1", **kw) -> SchedulerSettings:
    kw.setdefault("interval", 0.05)
    kw.setdefault("lease_ms", 3000)
    return SchedulerSettings(holder_id=holder, **kw)


def scheduler(r, holder: str = "s1", **kw) -> Scheduler:
    return Scheduler(settings(holder, **kw), r)


async def add_node(r, node_id: str, cpu: int = 4000, memory: int = 8 * GiB, gpus: int = 0,
                   ttl_ms: int = 60_000, gpu_devices: list[state.GpuDevice] | None = None,
                   cpu_work: int = 1) -> None:
    """A live node record as a worker writes it; ``gpus`` without ``gpu_devices``: that many
    80 GiB A100s with UUIDs made from the node id."""
    if gpu_devices is None:
        gpu_devices = [state.GpuDevice(uuid=f"GPU-{node_id}-{i}", name="NVIDIA A100-SXM4-80GB", memory=80 * GiB,
                                       free=80 * GiB) for i in range(gpus)]
    node = state.Node(id=node_id, host="127.0.0.1", cpu=cpu, memory=memory, gpus=len(gpu_devices),
                      started=time.time(), gpu_inventory=state.GpuDevice.encode_list(gpu_devices), cpu_work=cpu_work)
    await r.hset(keys.node(node_id), mapping=node.to_hash())
    await r.sadd(keys.NODES, node_id)
    await r.set(keys.node_alive(node_id), "1", px=ttl_ms)


async def kill_node(r, node_id: str) -> None:
    await r.delete(keys.node_alive(node_id))


async def deploy(r, name: str, version: int = 1, image: str | None = None, cpu: float = 0.5,
                 memory: int = 512 * MiB, min_instances: int = 0, max_instances: int = 10,
                 concurrency: int = 4, idle_timeout: float = 60.0, keep_paused: float = 300.0,
                 resources: Resources | None = None, **policy) -> FunctionSpec:
    """What the gateway's deploy does: a version record, then latest (active on first deploy).
    RESOURCES, when given, replace cpu and memory (a GPU function's)."""
    spec = FunctionSpec(name=name, handler="main:handle",
                        resources=resources or Resources(cpu=cpu, memory=memory),
                        scaling=Scaling(min_instances=min_instances, max_instances=max_instances,
                                        concurrency=concurrency, idle_timeout=idle_timeout,
                                        keep_paused=keep_paused, **policy))   # target_utilization, cooldowns
    await r.hset(keys.function_version(name, version),
                 mapping={"image": image or f"gantry/{name}:v{version}", "spec": state.pack(spec.to_dict()),
                          "created": str(time.time())})
    fields = {"name": name, "latest": str(version), "updated": str(time.time())}
    if not await r.hexists(keys.function(name), "active"):
        fields["active"] = str(version)
    await r.hset(keys.function(name), mapping=fields)
    await r.sadd(keys.FUNCTIONS, name)
    return spec


async def delete_function(r, name: str) -> None:
    """What the gateway's delete does."""
    await r.delete(keys.function(name))
    await r.srem(keys.FUNCTIONS, name)


async def report(r, name: str, inflight: int = 0, waiting: int = 0, now: float | None = None,
                 gateway: str = "gw1", publish: bool = False) -> None:
    now = time.time() if now is None else now
    await r.hset(keys.function_load(name), gateway, msgpack.packb([inflight, waiting, now, now]))
    if publish:
        await r.publish(keys.EVENTS, f"demand:{name}")


async def set_state(r, instance_id: str, to: str, reason: str = "", **fields) -> bool:
    """Write an instance's state (and fields) straight into its record, if it exists, and
    announce it: a test's shortcut past the transition table."""
    if not await r.exists(keys.instance(instance_id)):
        return False
    await r.hset(keys.instance(instance_id), mapping={"state": to, "reason": reason,
                                                       **{k: str(v) for k, v in fields.items()}})
    await r.publish(keys.EVENTS, "inst:" + (await r.hget(keys.instance(instance_id), "function")).decode())
    return True


async def instances(r, name: str, live_only: bool = False) -> list[state.Instance]:
    found = await Store(r).function_instances(name)
    if live_only:
        found = [i for i in found if i.state in state.LIVE_STATES]
    return sorted(found, key=lambda i: i.id)


async def field(r, name: str, key: str) -> str | None:
    value = await r.hget(keys.function(name), key)
    return value.decode() if value is not None else None


async def commands(r, node_id: str) -> list[dict]:
    """Peek at a node's queued commands, oldest first."""
    return [state.unpack(c) for c in reversed(await r.lrange(keys.node_commands(node_id), 0, -1))]


class FakeWorker:
    def __init__(self, r, node_id: str) -> None:
        self.r, self.node_id = r, node_id
        self.store = Store(r)
        self.max_epoch = 0
        self.handled: list[dict] = []
        self.refused: list[dict] = []
        self.fail_starts = False
        self.ignore_starts = False

    async def step(self, limit: int = 1000) -> list[dict]:
        """Handle every queued command (oldest first); returns those handled."""
        done = []
        for _ in range(limit):
            raw = await self.r.rpop(keys.node_commands(self.node_id))
            if raw is None:
                break
            cmd = state.unpack(raw)
            current = int(await self.r.get(keys.LEADER_EPOCH) or 0)
            if cmd["epoch"] < self.max_epoch or cmd["epoch"] < current:
                self.refused.append(cmd)
                continue
            self.max_epoch = cmd["epoch"]
            if cmd["op"] == "start":
                if self.ignore_starts:
                    continue
                if self.fail_starts:
                    await self.store.move_instance(cmd["instance"], state.FAILED, reason="exited with 1")
                else:
                    await self.store.move_instance(cmd["instance"], state.STARTING, host="127.0.0.1", port=9000)
                    await self.store.move_instance(cmd["instance"], state.READY, reason="")
            elif cmd["op"] in ("stop", "remove"):
                await self.store.move_instance(cmd["instance"], state.STOPPED, reason="")
            elif cmd["op"] == "pause":
                await self._move(cmd["instance"], state.PAUSING, state.PAUSED, "scaled down")
            elif cmd["op"] == "unpause":
                await self._move(cmd["instance"], state.RESUMING, state.READY, "")
            done.append(cmd)
        self.handled += done
        return done


    async def _move(self, instance_id: str, from_state: str, to_state: str, reason: str) -> None:
        """Compare-and-set, as the real worker does: a pause that a drain overtook stays drained."""
        await self.store.move_instance(instance_id, to_state, (from_state,), reason=reason)


async def settle(sched, workers, now: float | None = None, rounds: int = 3) -> None:
    """Alternate scheduler passes and worker steps a bounded number of times."""
    for _ in range(rounds):
        await sched._iteration(now)
        for w in workers:
            await w.step()
    await sched._iteration(now)

"""Per function: desired instances vs actual ones, and version rollout.

``plan`` is the decision, pure and exact (tests call it directly); ``Reconciler`` gathers
its inputs, keeps what must outlive one pass (the want window, crash backoff, the last
pending reason) and carries the plan out through gantry.scheduler.writes.

Rollout (docs/control-plane.md "Versions and rollout"): while ``latest != active`` the
latest version is started up to max(live instances of active, target, 1 if there is
demand), capped at max_instances; once that many are ready, ``active`` moves to
``latest`` (PROMOTE_VERSION, only if neither changed meanwhile) and every other version is
drained.  With no live instance of the active version, ``active`` moves at once.  During
a rollout the active version still scales up with demand but is not scaled down.

Warm pool (docs/control-plane.md "Scaling"): when the active version (== latest) scales
down and the spec's ``keep_paused`` is above zero, its surplus ready instances are paused
instead of drained; scaling up resumes paused instances of the version first (most
recently paused first) and places new ones only for the rest.  A paused (or pausing)
instance older than ``keep_paused`` is drained, and so is every paused instance of a
version that is no longer kept (a rollout) or of a deleted function.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from .. import state
from ..state import Function, Instance, Node
from ..store import Deposed, Store, UnreadableRecord
from ..tenants.model import split
from ..tenants.quota import QuotaExceeded
from ..tenants.quotastore import QuotaStore
from . import writes
from . import reclaim
from .autoscale import Decision, Memory, Policy, WantWindow, compute_want, decide, demand_from_reports, last_request
from .decisions import DecisionStore
from . import gpulease
from .placement import (Ranker, Request, for_tenant, no_capacity_reason, no_cpu_work_reason, no_gpu_reason,
                        no_node_reason, place, place_gpu, takes)
from .tenancy import IsolationCache

log = logging.getLogger(__name__)

# Drain order when scaling down: what serves nobody goes first, then the newest.
_DRAIN_FIRST = {state.UNHEALTHY: 0, state.PENDING: 1, state.STARTING: 2, state.RESUMING: 3, state.READY: 4}
# What a scale-down may pause (anything else in the surplus is drained).
_PAUSABLE = state.TRANSITIONS[state.PAUSING]


@dataclass
class Plan:
    start: dict[int, int] = field(default_factory=dict)    # version -> instances to start
    drain: list[Instance] = field(default_factory=list)
    promote: bool = False                                   # move active to latest first
    pause: list[Instance] = field(default_factory=list)     # scaled down into the paused pool
    resume: list[Instance] = field(default_factory=list)    # back from the pool, before any start
    expire: list[Instance] = field(default_factory=list)    # paused longer than keep_paused: drained


def surplus(instances: list[Instance], count: int) -> list[Instance]:
    ranked = sorted(instances, key=lambda i: (_DRAIN_FIRST.get(i.state, 0), -i.created, i.id))
    return ranked[:max(0, count)]


def plan(active: int, latest: int, target: int, demand: int, maximum: int,
         instances: list[Instance], keep_paused: float = 0.0, now: float = 0.0) -> Plan:
    """What to do for one function.  ``instances`` are its records after reaping; live
    ones (pending, starting, ready, unhealthy, resuming) count towards ``target``; pausing
    and paused ones are the warm pool, kept while younger than ``keep_paused`` seconds
    (their ``paused_at`` against ``now``).  ``keep_paused`` 0 pauses nothing."""
    out = Plan()
    by_version: dict[int, list[Instance]] = {}
    pooled: dict[int, list[Instance]] = {}
    for inst in instances:
        if inst.state in state.LIVE_STATES:
            by_version.setdefault(inst.version, []).append(inst)
        elif inst.state in state.WARM_STATES:
            if now - inst.paused_at >= keep_paused:
                out.expire.append(inst)
            else:
                pooled.setdefault(inst.version, []).append(inst)
    if active != latest and not by_version.get(active):
        out.promote, active = True, latest              # nothing serves the old version

    def grow(version: int, count: int) -> None:
        """``count`` more of ``version``: resumed from the pool first, then started."""
        warm = sorted(pooled.get(version, []), key=lambda i: (-i.paused_at, -i.created, i.id))[:count]
        out.resume += warm
        if count > len(warm):
            out.start[version] = count - len(warm)

    current = by_version.get(active, [])
    if active == latest:
        if len(current) < target:
            grow(latest, target - len(current))
        for inst in surplus(current, len(current) - target):
            (out.pause if keep_paused > 0 and inst.state in _PAUSABLE else out.drain).append(inst)
        keep = {latest}
    else:
        fresh = by_version.get(latest, [])
        need = min(maximum, max(len(current), target, 1 if demand > 0 else 0))
        if len(fresh) < need:
            grow(latest, need - len(fresh))
        if sum(1 for i in fresh if i.state == state.READY) >= need:
            out.promote = True
            keep = {latest}
        else:
            if len(current) < target:
                grow(active, target - len(current))
            keep = {active, latest}
    for group in (by_version, pooled):
        for version, insts in group.items():
            if version not in keep:
                out.drain += insts
    return out


def new_instance_id(function: str) -> str:
    return f"{function}-{uuid.uuid4().hex[:12]}"


def crash_backoff(failures: int) -> float:
    """Seconds before starting a version again after ``failures`` in a row: the first
    replacement is immediate, then 1, 2, 4 ... up to 30 s."""
    return 0.0 if failures <= 1 else min(30.0, 2.0 ** (failures - 2))


class Reconciler:
    def __init__(self, store: Store, settings) -> None:
        self._store = store
        self._quotas = QuotaStore(store.redis)
        self._ranker = Ranker()
        self.isolation = IsolationCache(store.redis)                  # tenant -> isolation level
        self._settings = settings
        self._windows: dict[str, WantWindow] = {}
        # The scaling policy's memory (autoscale.decide), seeded from the function record on
        # first sight, and the cooldown hold last recorded (recorded once, not every pass).
        self._memory: dict[str, Memory] = {}
        self._held: dict[str, tuple[str, int]] = {}
        self._decisions = DecisionStore(store.redis)
        self._crashes: dict[tuple[str, int], tuple[int, float]] = {}   # -> (failures, not before)
        self._reasons: dict[str, tuple[str, str]] = {}                 # (pending_reason, pending_quota) written
        self._failing: dict[str, str] = {}                             # function -> its last failure
        # Start failures (docs/architecture.md "Errors": 502 function_start_failed): the
        # instances this leader has seen ready, per function (an instance reaped as failed
        # that is not among them never became ready); the failed starts noted and not yet
        # written; what the function record says now (absent: not known to this leader).
        self._seen_ready: dict[str, set[str]] = {}
        self._new_start_failures: dict[str, tuple[int, str]] = {}
        self._start_failed: dict[str, tuple[int, str] | None] = {}

    def forget(self, keep: set[str]) -> None:
        """Drop memory of functions that no longer exist."""
        for memory in (self._windows, self._memory, self._held):
            for name in [n for n in memory if n not in keep]:
                del memory[name]
        for name in [n for n in self._reasons if n not in keep]:
            del self._reasons[name]
        for name in [n for n in self._failing if n not in keep]:
            del self._failing[name]
        for key in [k for k in self._crashes if k[0] not in keep]:
            del self._crashes[key]
        for memory in (self._seen_ready, self._new_start_failures, self._start_failed):
            for name in [n for n in memory if n not in keep]:
                del memory[name]

    def note_failures(self, failed: list[Instance], now: float) -> None:
        for inst in failed:
            count = self._crashes.get((inst.function, inst.version), (0, 0.0))[0] + 1
            self._crashes[(inst.function, inst.version)] = (count, now + crash_backoff(count))
            log.warning("instance %s of %s v%d failed (%s); %d in a row", inst.id, inst.function,
                        inst.version, inst.reason or "no reason", count)
            if inst.id not in self._seen_ready.get(inst.function, ()):
                # never ready: its version's start failed; reconcile writes it to the record
                self._new_start_failures[inst.function] = (inst.version, inst.reason or "failed before it was ready")

    async def reconcile(self, fn: Function, instances: list[Instance], nodes: list[Node],
                        now: float, epoch: int) -> Plan:
        """One pass for a deployed function.  Raises Deposed if our epoch is stale."""
        store, name, spec = self._store, fn.name, fn.spec
        for inst in instances:
            if inst.state == state.READY:
                self._crashes.pop((name, inst.version), None)
        await self._note_start(name, instances)
        demand = demand_from_reports(await store.load_reports(name), now, self._settings.load_fresh)
        sc = spec.scaling
        minimum = fn.min_override if fn.min_override >= 0 else sc.min_instances
        maximum = max(minimum, sc.max_instances)
        policy = Policy(minimum, maximum, sc.concurrency, sc.target_utilization, sc.scale_up_cooldown,
                        sc.scale_down_cooldown, sc.idle_timeout, fn.warm_now(now))
        want = compute_want(demand, sc.concurrency, policy.floor, maximum, sc.target_utilization)
        memory = self._memory.get(name)
        if memory is None:      # first sight (new function or new leader): the last decision, else
            live = sum(1 for i in instances if i.state in state.LIVE_STATES and i.version == fn.active)
            last = min(maximum, fn.scale_target if fn.scale_target >= 0 else live)
            self._windows[name] = WantWindow()      # ... assume what runs was wanted
            self._windows[name].seed(now, max(policy.floor, last))
            # (below the floor: the first decision says so, "scale up 0->2: min_instances 2")
            memory = self._memory[name] = Memory(last, fn.scaled_up_at, fn.scaled_at)
        window = self._windows.setdefault(name, WantWindow())
        decision = decide(memory, demand, window.observe(now, want, sc.idle_timeout), policy, now)
        target = decision.target
        keep_paused = spec.scaling.keep_paused
        decided = plan(fn.active, fn.latest, target, demand, maximum, instances, keep_paused, now)
        if decided.promote:
            if not await writes.promote(store, epoch, name, fn.latest, fn.active, now):
                return Plan()   # a newer deploy, a delete or a newer leader: read again next pass
            log.info("function %s: version %d active (was %d)", name, fn.latest, fn.active)
        for inst in decided.resume:
            if await writes.resume(store, epoch, inst):
                log.info("function %s v%d: resuming paused %s", name, inst.version, inst.id)
        reason, quota = "", ""
        # Stopping other functions' idle instances is for what is wanted now (waiting
        # requests, min_instances), not for a target the idle window merely still holds.
        urgent = want > sum(1 for i in instances if i.state in state.LIVE_STATES and i.version == fn.active)
        for version, count in sorted(decided.start.items()):
            try:
                reason = await self._start(fn, version, count, nodes, now, epoch, urgent) or reason
            except QuotaExceeded as exc:       # its tenant's quota: no node, no reclaim helps
                reason, quota = str(exc), exc.encode()
                break
        await self._set_reason(name, reason, quota)
        # recorded after the starts, so a cold start waits for no extra round trip (a pass
        # that ends early records nothing and remembers nothing: the next one decides again)
        await self._note_decision(name, memory, decision, now, epoch)
        for inst in decided.pause:
            await writes.pause(store, epoch, inst, now)
        for inst in decided.drain:
            await writes.drain(store, epoch, inst, "scaled down" if inst.version == fn.latest
                               else "replaced by a newer version")
        for inst in decided.expire:
            await writes.drain(store, epoch, inst, f"paused longer than keep_paused ({keep_paused:g}s)")
        return decided

    async def failed(self, name: str, exc: Exception) -> None:
        """One function's pass raised (an unreadable record, a bug): log it once per distinct
        error, not once per pass, and show it as the function's pending_reason."""
        what = str(exc) if isinstance(exc, UnreadableRecord) else f"{type(exc).__name__}: {exc}"
        if self._failing.get(name) != what:
            self._failing[name] = what
            # an unreadable record needs no traceback; anything else is a bug: show where
            log.error("function %s: not reconciled, other functions go on: %s", name, what,
                      exc_info=None if isinstance(exc, UnreadableRecord) else exc)
        await self._set_reason(name, f"not reconciled: {what}"[:500])

    def succeeded(self, name: str) -> None:
        if self._failing.pop(name, None) is not None:
            log.info("function %s: reconciled again", name)

    async def drain_all(self, name: str, instances: list[Instance], epoch: int) -> None:
        """A deleted function: drain whatever of it still runs or is paused."""
        for inst in instances:
            if inst.state in state.TRANSITIONS[state.DRAINING]:
                await writes.drain(self._store, epoch, inst, "function deleted")
        self._windows.pop(name, None)
        self._memory.pop(name, None)
        self._held.pop(name, None)

    async def _start(self, fn: Function, version: int, count: int, nodes: list[Node],
                     now: float, epoch: int, urgent: bool = True) -> str:
        """Place and start ``count`` instances of ``version``; returns the reason some could
        not be placed ("" if all were)."""
        failures, not_before = self._crashes.get((fn.name, version), (0, 0.0))
        if now < not_before:
            log.debug("function %s v%d: backing off after %d failures", fn.name, version, failures)
            return ""
        if version == fn.latest:
            image, spec = fn.image, fn.spec
        else:
            found = await self._store.get_version(fn.name, version)
            if found is None:
                log.warning("function %s: version %d has no record; not starting it", fn.name, version)
                return ""
            image, spec = found
        req = Request.of(spec.resources)
        tenant = spec.tenant or split(fn.name)[0]
        isolation = await self.isolation.get(tenant)
        allowed = for_tenant(nodes, tenant, isolation)      # labelled nodes (GANTRY_NODE_TENANT)
        if nodes and not allowed:
            return no_node_reason(tenant, isolation, nodes)
        if no_cpu_work := no_cpu_work_reason(req, allowed):
            return no_cpu_work
        for _ in range(count):
            # QuotaExceeded (the tenant's quota refused) goes up to reconcile: it is the reason
            lease: list[tuple[str, int]] = []
            if req.gpu.wanted:
                placed = await place_gpu(self._store, epoch, fn.name, allowed, req, self._ranker, tenant)
                node, lease = (placed.node, placed.lease) if placed else (None, [])
            else:
                node = await place(self._store, fn.name, allowed, req, self._ranker, tenant)
            if node is None:
                # Never stop anyone's instances for what the quota would refuse anyway.
                refused = await self._quotas.check_placed(fn.name, req.cpu, req.memory, req.gpu.quota_gpus)
                if refused is not None:
                    raise refused
                if req.gpu.wanted:
                    # GPUs are not reclaimed from other functions (docs/gpus.md): say why it waits
                    why = no_gpu_reason(req, allowed, await self._store.node_gpu_leases([n.id for n in allowed]))
                    return why or await self._make_room(fn.name, req, allowed, now, epoch, False)
                return await self._make_room(fn.name, req, [n for n in allowed if takes(n, req)], now, epoch, urgent)
            try:
                # the node's container created ahead for this version, if any: its id makes
                # the start Docker's start alone (worker/spares.py)
                spare = None if lease else await self._store.take_spare(epoch, node.id, fn.name, version)
                inst = Instance(id=spare or new_instance_id(fn.name), function=fn.name, version=version,
                                node=node.id, state=state.PENDING, cpu=req.cpu, memory=req.memory,
                                concurrency=spec.scaling.concurrency, created=now, epoch=epoch,
                                gpus=req.gpu.quota_gpus, tenant=tenant, gpu_lease=gpulease.encode(lease))
                await writes.create_instance(self._store, epoch, inst, image, spec, isolation)
            except Deposed:
                await self._store.unreserve(node.id, req.cpu, req.memory, tenant, req.gpu.quota_gpus, lease)
                raise
            log.info("function %s v%d: starting %s on %s", fn.name, version, inst.id, node.id)
        return ""

    async def _make_room(self, name: str, req: Request, nodes: list[Node], now: float, epoch: int,
                         urgent: bool) -> str:
        """``req`` fits on no live node: stop what reclaim.choose picks (paused, then idle
        instances of other functions; only when ``urgent``) and return why the function waits.
        A function that loses idle instances is scaled down with them: its idle window
        restarts from what it keeps, so it does not take the room straight back."""
        store = self._store
        ids = [n.id for n in nodes]
        allocs = await store.node_allocations(ids)
        rooms = [reclaim.NodeRoom(n.id, n.allocatable_cpu - cpu, n.memory - memory)
                 for n, (cpu, memory) in zip(nodes, allocs)]
        if not urgent:
            return no_capacity_reason(req, [(r.node, r.free_cpu, r.free_memory) for r in rooms])
        on_nodes = await store.get_instances(set().union(*await store.instance_sets([(None, i) for i in ids])))
        holders = {}
        for holder in sorted({i.function for i in on_nodes if i.function != name}):
            holders[holder] = await self._holder(holder, on_nodes, now)
        decision = reclaim.choose(req.cpu, req.memory, name, rooms, on_nodes,
                                  {k: v for k, v in holders.items() if v is not None})
        if decision.waiting:
            return f"making room: instances are stopping on {decision.node}"
        if not decision.victims:
            return no_capacity_reason(req, [(r.node, r.free_cpu, r.free_memory) for r in rooms])
        for victim in decision.victims:
            await writes.drain(store, epoch, victim, f"stopped to make room for {name}")
        for function in {v.function for v in decision.victims}:
            kept = sum(1 for i in on_nodes if i.function == function and i.state in state.LIVE_STATES
                       and i not in decision.victims)
            self._windows.setdefault(function, WantWindow()).seed(now, kept)
            await self._scaled_down(function, kept, f"stopped idle instances to make room for {name}", now, epoch)
        log.info("function %s: making room on %s: stopping %s", name, decision.node,
                 ", ".join(f"{v.id} ({v.state})" for v in decision.victims))
        return f"making room: stopping {len(decision.victims)} idle instance(s) on {decision.node}"

    async def _holder(self, name: str, instances: list[Instance], now: float) -> reclaim.Holder | None:
        """What reclaim needs to know of a function holding instances (None: not deployed)."""
        fn = await self._store.get_function(name)
        if fn is None:
            return None
        reports = await self._store.load_reports(name)
        minimum = max(fn.min_override if fn.min_override >= 0 else fn.spec.scaling.min_instances,
                      fn.warm_now(now))
        live = sum(1 for i in instances if i.function == name and i.state in state.LIVE_STATES)
        return reclaim.Holder(busy=demand_from_reports(reports, now, self._settings.load_fresh) > 0,
                              spare=live - minimum, last_request=last_request(reports))

    async def _note_decision(self, name: str, memory: Memory, decision, now: float, epoch: int) -> None:
        """Remember a scaling decision; record it (keys.RECORD_DECISION) when it changed the
        target, or when a cooldown starts holding a change back (once per hold, not per pass)."""
        hold = (decision.held, decision.wanted) if decision.held else None
        if decision.changed or (hold is not None and self._held.get(name) != hold):
            log.info("function %s: %s", name, decision.reason)
            await self._decisions.record(epoch, name, now, memory.target, decision)
        if hold is None:
            self._held.pop(name, None)
        else:
            self._held[name] = hold
        self._memory[name] = decision.memory

    async def _scaled_down(self, name: str, target: int, why: str, now: float, epoch: int) -> None:
        """Another function's need scaled NAME down to TARGET (reclaim): its decision too."""
        memory = self._memory.get(name) or Memory(target)
        if memory.target != target:
            after = Memory(target, memory.up_at, now)
            await self._note_decision(name, memory, Decision(
                target, f"scale down {memory.target}->{target}: {why}", after, True, target), now, epoch)
        self._memory[name] = Memory(target, memory.up_at, now)

    async def _note_start(self, name: str, instances: list[Instance]) -> None:
        """Keep the function record's last failed start (``start_failed``) true: set it when
        an instance was reaped as failed before it was ever ready (note_failures), clear it
        once an instance of that version or a newer one is ready."""
        ids = {i.id for i in instances}
        ready = {i.version for i in instances if i.state == state.READY}
        self._seen_ready[name] = (self._seen_ready.get(name, set()) & ids) | {
            i.id for i in instances if i.state == state.READY}
        failed = self._new_start_failures.pop(name, None)
        recorded = self._start_failed.get(name, ())      # (): this leader does not know
        if failed is not None and not any(v >= failed[0] for v in ready):
            if recorded != failed:
                await self._store.set_start_failed(name, *failed)
                self._start_failed[name] = failed
                log.warning("function %s: version %d failed to start: %s", name, *failed)
        elif ready and (recorded == () or (recorded and recorded[0] <= max(ready))):
            if await self._store.clear_start_failed(name, max(ready)) and recorded:
                log.info("function %s: version %d started", name, max(ready))
            self._start_failed[name] = None

    async def _set_reason(self, name: str, reason: str, quota: str = "") -> None:
        """Record (and log, once per change) why the function's wanted instances wait, and
        with ``quota`` the tenant quota that refused them (QuotaExceeded.encode)."""
        if self._reasons.get(name) == (reason, quota):
            return
        if reason:
            log.warning("function %s: %s", name, reason)
        await self._store.set_pending_reason(name, reason, quota)
        self._reasons[name] = (reason, quota)

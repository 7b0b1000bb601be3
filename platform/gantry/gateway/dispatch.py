"""The async dispatcher: each gateway reads its share of the async streams and runs them on
the function's instances, through the same balancer, slots and demand signals as a sync
request (so async work respects max_instances and concurrency, and waiting work scales a
function up from zero).

Delivery (docs/async.md "Delivery"): an entry is acknowledged only by the script that stores
its attempt's outcome.  While an attempt runs, the dispatcher beats a heartbeat on its entry
every ``reclaim_after / 5`` seconds, so the entry is never idle long enough for another
dispatcher to reclaim it; only a dispatcher that stopped beating (it died, or lost Redis)
loses its work.  The one that takes it over (XAUTOCLAIM after ``reclaim_after``, or the
same gateway after a restart, which re-reads its own pending entries at once) sends the same
attempt to the same instance, which joins the run it already has (gantry_runtime.detached)
instead of starting it again.  So an attempt runs twice only if its instance died with it,
and then it counts as the crash it was, retried by policy.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass

from aiohttp import web
from gantry_runtime import wire

from . import upstream
from .appkeys import CACHE, INVOCATIONS, METRICS, SETTINGS, STORE, UPSTREAM
from .background import run_every
from .errors import ApiError
from .invoke import CONNECT_SUSPEND, RETRYABLE_503, wait_for_slot
from .tenantlimits import TENANT_LIMITS
from .usage import METER
from .workers import worker_suffix
from ..invocations.model import PRIORITIES, State, Verdict, may_retry, read_order, retry_delay, verdict
from ..invocations.store import Claim, Entry
from ..manifest import AsyncPolicy
from ..state import Instance, InstanceState
from ..store import UNAVAILABLE
from ..tenants.model import split

log = logging.getLogger("gantry.dispatch")

READ_BATCH = 4          # entries read per stream read (priorities are chosen per read)
IDLE_WAIT = 0.5         # seconds a function's loop sleeps when it found nothing (a hint wakes it)
MOVE_EVERY = 0.25       # seconds between moves of due retries back into line
SLOT_WAIT = 5.0         # seconds one wait for a slot lasts before the dispatcher looks again
DISCOVER_EVERY = 1.0    # seconds between reads of the set of functions with async work


@dataclass
class Held:
    entry: Entry
    lease: int


class _Outcome(Exception):
    """An attempt's end, raised out of the forward: its HTTP status (0: none came), an error
    code and message, and the result bytes and type if any."""

    def __init__(self, status: int, code: str = "", message: str = "", result: bytes | None = None,
                 result_type: str = "", expired: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.result, self.result_type = status, code, message, result, result_type
        self.expired = expired    # it never started and its max_event_age passed


class Dispatcher:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        s = app[SETTINGS]
        self.settings = s
        self.store = app[INVOCATIONS]
        self.consumer = s.dispatch_id or f"{socket.gethostname()}:{s.port}{worker_suffix(s.workers, s.worker_index)}"
        self.held: dict[str, Held] = {}                 # invocation id -> its entry and lease
        self.outstanding: dict[str, int] = {}           # function -> entries held here
        self.wakeups: dict[str, asyncio.Event] = {}     # function -> set when work may be waiting
        self.loops: dict[str, asyncio.Task] = {}
        self.tasks: set[asyncio.Task] = set()
        self.started = 0   # attempts sent to an instance (tests and metrics)
        self.joined = 0    # attempts that joined a run already going on an instance

    # --- the loops ------------------------------------------------------------------------------

    def wake(self, function: str) -> None:
        ev = self.wakeups.get(function)
        if ev is not None:
            ev.set()
        elif function not in self.loops:
            self._ensure(function)

    def _ensure(self, function: str) -> None:
        task = self.loops.get(function)
        if task is None or task.done():
            self.wakeups.setdefault(function, asyncio.Event())
            self.loops[function] = asyncio.create_task(self._serve(function), name=f"gantry-dispatch-{function}")

    async def discover(self) -> None:
        for function in await self.store.functions():
            self._ensure(function)

    async def heartbeat(self) -> None:
        held = list(self.held.values())
        lost = await self.store.heartbeat(self.consumer, [(h.entry, h.lease) for h in held])
        for inv_id in lost:
            log.warning("an async invocation's claim was taken over", extra={"invocation_id": inv_id})

    async def move_due(self) -> None:
        if await self.store.move_due():
            for ev in self.wakeups.values():
                ev.set()

    def background(self) -> list[asyncio.Task]:
        beat = max(0.05, self.settings.async_reclaim_after / 5)
        return [asyncio.create_task(run_every(DISCOVER_EVERY, self.discover, "async discovery"), name="gantry-async-discover"),
                asyncio.create_task(run_every(beat, self.heartbeat, "async heartbeat"), name="gantry-async-heartbeat"),
                asyncio.create_task(run_every(MOVE_EVERY, self.move_due, "async retries"), name="gantry-async-retries")]

    async def close(self) -> None:
        for task in [*self.loops.values(), *self.tasks]:
            task.cancel()
        await asyncio.gather(*self.loops.values(), *self.tasks, return_exceptions=True)

    async def _serve(self, function: str) -> None:
        """One function's loop: take back what this consumer held before a restart, then read
        new work while there is room, and reclaim what dead dispatchers held."""
        wakeup = self.wakeups[function]
        tick = 0
        last_reclaim = 0.0
        while True:
            try:
                await self.store.ensure_groups(function)
                for priority in PRIORITIES:
                    for entry in await self.store.read(function, priority, self.consumer, 10_000, own=True):
                        self._start(entry)
                break
            except UNAVAILABLE as exc:
                log.warning("async dispatch cannot reach Redis", extra={"function": function, "error": repr(exc)})
                await asyncio.sleep(1.0)
        while True:
            try:
                room = await self._room(function)
                got = 0
                if room > 0:
                    for priority in read_order(tick):
                        entries = await self.store.read(function, priority, self.consumer, min(room, READ_BATCH))
                        for entry in entries:
                            self._start(entry)
                        got += len(entries)
                        if entries:
                            break
                    tick += 1
                now = time.monotonic()
                if now - last_reclaim >= self.settings.async_reclaim_after / 2 and room > 0:
                    last_reclaim = now
                    for priority in PRIORITIES:
                        for entry in await self.store.reclaim(function, priority, self.consumer,
                                                              self.settings.async_reclaim_after, room):
                            self._start(entry)
                if got == 0:
                    wakeup.clear()
                    try:
                        await asyncio.wait_for(wakeup.wait(), IDLE_WAIT)
                    except TimeoutError:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("async dispatch loop failed; retrying", exc_info=True, extra={"function": function, "error": repr(exc)})
                await asyncio.sleep(1.0)

    async def _room(self, function: str) -> int:
        """How many more entries this dispatcher may hold for FUNCTION: its whole capacity
        (max_instances x concurrency) less what it holds; a function not deployed here still
        gets one at a time, so its entries settle (as not_found)."""
        entry = await self.app[CACHE].get(function)
        active = entry.known.active if entry is not None else None
        cap = active.spec.scaling.max_instances * active.spec.scaling.concurrency if active else 1
        return cap - self.outstanding.get(function, 0)

    def _start(self, entry: Entry) -> None:
        if entry.invocation_id in self.held:
            return            # already running here (read again after a heartbeat hiccup)
        self.outstanding[entry.function] = self.outstanding.get(entry.function, 0) + 1
        task = asyncio.create_task(self._handle(entry), name=f"gantry-async-{entry.invocation_id}")
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._done(entry, t))

    def _done(self, entry: Entry, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.outstanding[entry.function] -= 1
        ev = self.wakeups.get(entry.function)
        if ev is not None:
            ev.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("async invocation failed in the dispatcher", exc_info=task.exception(),
                      extra={"invocation_id": entry.invocation_id})

    # --- one invocation ---------------------------------------------------------------------------

    async def _handle(self, entry: Entry) -> None:
        s = self.settings
        claim = await self.store.claim(entry, self.consumer, s.dlq_retention)
        if claim.action in ("settled", "expired"):
            return
        self.held[entry.invocation_id] = Held(entry, claim.lease)
        try:
            await self._attempt(entry, claim)
        finally:
            self.held.pop(entry.invocation_id, None)

    async def _attempt(self, entry: Entry, claim: Claim) -> None:
        s = self.settings
        inv = claim.invocation
        cached = await self.app[CACHE].get(entry.function)
        active = cached.known.active if cached is not None else None
        if active is None:
            await self.store.settle(entry, claim.lease, State.FAILED, s.async_retention, status=404,
                                    error_code="not_found", error=f"function {entry.function!r} is not deployed")
            return
        policy = active.spec.async_policy
        started = time.monotonic()
        try:
            if claim.action == "resume":
                await self._resume(entry, claim, inv, cached)
            await self._run(entry, claim, inv, cached)
        except _Outcome as out:
            tenant, fn = split(entry.function)
            self.app[METER].observe(tenant, fn, True, out.status or 502, time.monotonic() - started)
            self.app[METRICS].attempt(entry.function, out.status or 502, out.code, time.monotonic() - started)
            await self._settle(entry, claim, inv.deadline, policy, out)

    async def _settle(self, entry: Entry, claim: Claim, deadline: float, policy: AsyncPolicy, out: _Outcome) -> None:
        s = self.settings
        if out.expired:
            await self.store.settle(entry, claim.lease, State.EXPIRED, s.dlq_retention, error_code=out.code,
                                    error=out.message, attempts=claim.attempts - 1)
            return
        status = out.status or 502
        v = verdict(status)
        if v is not Verdict.RETRY:
            state = State.SUCCEEDED if v is Verdict.SUCCEEDED else State.FAILED
            await self.store.settle(entry, claim.lease, state, s.async_retention, status=status, result=out.result,
                                    result_type=out.result_type, error_code=out.code, error=out.message)
            return
        now = time.time()
        delay = retry_delay(policy, claim.attempts)
        if may_retry(policy, claim.attempts, now, deadline, delay):
            await self.store.retry(entry, claim.lease, now + delay, status=out.status or None,
                                   error_code=out.code or "function_error", error=out.message)
            log.info("async attempt failed; retrying", extra={
                "invocation_id": entry.invocation_id, "attempt": claim.attempts, "status": status,
                "code": out.code, "retry_in": delay})
        else:
            await self.store.settle(entry, claim.lease, State.DEAD, s.dlq_retention, status=out.status or None,
                                    result=out.result, result_type=out.result_type,
                                    error_code=out.code or "function_error", error=out.message)
            log.warning("async invocation is dead", extra={
                "invocation_id": entry.invocation_id, "attempts": claim.attempts, "code": out.code})

    def _headers(self, inv, claim: Claim, inst: Instance, timeout: float) -> dict[str, str]:
        return {wire.INVOCATION_ID: inv.id, wire.ATTEMPT: str(claim.attempts),
                wire.TIMEOUT: wire.format_timeout(timeout), wire.TENANT: inv.tenant,
                wire.INSTANCE_KEY: inst.key, "Content-Type": inv.content_type or "application/octet-stream"}

    async def _resume(self, entry: Entry, claim: Claim, inv, cached) -> None:
        """The attempt was running under an earlier claim: ask its instance for it.  Returns
        (to run it afresh) only when the instance never saw it; raises _Outcome otherwise."""
        inst = await self.app[STORE].get_instance(claim.instance) if claim.instance else None
        if inst is None or not inst.host or inst.state not in (InstanceState.READY, InstanceState.DRAINING):
            if not claim.instance:
                return       # it was claimed but never sent anywhere: run it now
            raise _Outcome(0, wire.ErrorCode.FUNCTION_OUTCOME_UNKNOWN,
                           f"instance {claim.instance} that was running attempt {claim.attempts} is gone; "
                           "the function may have run")
        await self._forward(entry, claim, inv, inst, cached.known.active.spec.limits.timeout)

    async def _run(self, entry: Entry, claim: Claim, inv, cached) -> None:
        """Send the attempt to a free instance (waiting for one as a sync request does);
        raises _Outcome with its result."""
        app = self.app
        exclude: set[str] = set()
        while True:
            if time.time() > inv.deadline:
                raise _Outcome(0, "expired", "the invocation could not start before its max_event_age", expired=True)
            active = cached.known.active
            if active is None or not cached.known.exists:
                raise _Outcome(404, "not_found", f"function {entry.function!r} was deleted")
            ticket = cached.routing.balancer.pick(exclude)
            if ticket is None:
                ticket = await wait_for_slot(app, cached, exclude, time.monotonic() + SLOT_WAIT)
            if ticket is None:
                failed = cached.known.start_failure()
                if failed:
                    raise _Outcome(503, wire.ErrorCode.FUNCTION_START_FAILED, f"the function could not start: {failed}")
                exclude.clear()
                await asyncio.sleep(0.1)   # the wait may end at once (a quota keeps it from starting)
                continue          # still no room: keep waiting (the heartbeat keeps the claim)
            try:
                limits = app.get(TENANT_LIMITS)
                release = await limits.admit(split(entry.function)[0], asyncio.get_running_loop().time()) \
                    if limits is not None else None
            except ApiError:      # the tenant's concurrency is full: wait, without using an attempt
                cached.routing.release(ticket)
                await asyncio.sleep(0.2)
                continue
            inst = ticket.instance
            cached.load.inflight += 1
            try:
                if not await self.store.note(inv.id, claim.lease, instance=inst.id):
                    return        # another dispatcher took it over (this one missed its heartbeats)
                sent = await self._forward(entry, claim, inv, inst, active.spec.limits.timeout)
            finally:
                cached.load.inflight -= 1
                cached.routing.release(ticket)
                if release is not None:
                    release()
            if sent is None:      # never reached the instance: try another
                exclude.add(inst.id)
                cached.routing.balancer.suspend(inst.id, CONNECT_SUSPEND)
                await asyncio.sleep(0.05)

    async def _forward(self, entry: Entry, claim: Claim, inv, inst: Instance, timeout: float) -> None:
        """POST the attempt to INST.  Returns None when the instance cannot have started it
        (refused, or a 503 that says so); raises _Outcome with anything else."""
        s = self.settings
        pool = self.app[UPSTREAM]
        body = inv.body or b""
        up = None
        self.started += 1
        try:
            async with asyncio.timeout(timeout + s.upstream_timeout_margin):
                try:
                    up = await pool.post(inst.host, inst.port, "/invoke", self._headers(inv, claim, inst, timeout), body)
                except upstream.UpstreamError as exc:
                    if not exc.request_sent:
                        return None
                    raise _Outcome(0, wire.ErrorCode.FUNCTION_OUTCOME_UNKNOWN,
                                   f"the instance broke off after the attempt was sent ({exc}); it may have run") from None
                headers = {k.lower(): v for k, v in up.headers}
                if headers.get(wire.ATTACHED.lower()) == "1":
                    self.joined += 1
                try:
                    data = await up.read(limit=s.async_max_result)
                except upstream.BadResponse:
                    raise _Outcome(413, "result_too_large",
                                   f"the result is over GANTRY_ASYNC_MAX_RESULT ({s.async_max_result} bytes)") from None
                except upstream.UpstreamError as exc:
                    raise _Outcome(0, wire.ErrorCode.FUNCTION_OUTCOME_UNKNOWN,
                                   f"the instance broke off while answering ({exc})") from None
                ctype = headers.get("content-type", "")
                if up.status == 503:
                    code, _ = wire.parse_error(data) or ("", "")
                    if code in RETRYABLE_503:
                        return None
                if up.status >= 400:
                    code, message = wire.parse_error(data) or ("function_error", data[:500].decode(errors="replace"))
                    raise _Outcome(up.status, code, message, data, ctype)
                raise _Outcome(up.status, result=data, result_type=ctype)
        except TimeoutError:
            raise _Outcome(504, wire.ErrorCode.TIMEOUT, f"the instance did not answer within {timeout:g}s") from None
        finally:
            if up is not None:
                up.release()


DISPATCHER = web.AppKey("dispatcher", Dispatcher)


async def dispatch_ctx(app: web.Application):
    """Run the dispatcher in this gateway (unless GANTRY_ASYNC_DISPATCH=0)."""
    if not app[SETTINGS].async_dispatch:
        yield
        return
    dispatcher = app[DISPATCHER] = Dispatcher(app)
    tasks = dispatcher.background()
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await dispatcher.close()

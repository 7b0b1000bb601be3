"""Callback delivery on a real Redis to a real aiohttp receiver on loopback.  Invocations are
made ready the way the dispatcher does it (InvocationStore.submit, read, claim, settle), so the
real scripts run.  The receiver checks every signature with signing.verify and counts POSTs."""
from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import Counter

import pytest
from aiohttp import web

from gantry import keys
from gantry.invocations import signing
from gantry.invocations.callbacks import (LEASE, CallbackState, CallbackStore, Deliverer, Decision,
                                          SigningSecrets, new_session)
from gantry.invocations.model import State
from gantry.invocations.store import InvocationStore
from gantry.manifest import AsyncPolicy

pytestmark = pytest.mark.timeout(60)

RETENTION = 3600


class Receiver:
    """A callback receiver: answers each POST per ``script`` (status codes, or "sleep" to keep
    the request unanswered until the test ends), counting only those whose signature verifies."""

    def __init__(self, secret: bytes, script: list | None = None) -> None:
        self.secret, self.script = secret, list(script or [200])
        self.posts: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.deliveries: list[str] = []
        self.bad = 0
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signing.verify(self.secret, request.headers.get(signing.HEADER, ""), body, time.time()):
            self.bad += 1
            return web.Response(status=401)
        inv_id = request.headers[signing.INVOCATION_HEADER]
        self.posts[inv_id] += 1
        self.deliveries.append(request.headers[signing.DELIVERY_HEADER])
        self.bodies.append(json.loads(body))
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if answer == "sleep":
            await self.release.wait()
            answer = 200
        return web.Response(status=answer)

    async def start(self, port: int = 0) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receivers():
    made: list[Receiver] = []

    async def start(secret: bytes, script: list | None = None, port: int = 0) -> Receiver:
        made.append(await Receiver(secret, script).start(port))
        return made[-1]

    yield start
    for r in made:
        await r.stop()


@pytest.fixture
async def sessions():
    made = []

    def new():
        made.append(new_session())
        return made[-1]

    yield new
    for s in made:
        await s.close()


async def ready(redis, url: str, tenant: str = "default", result: bytes = b'{"answer":42}',
                result_type: str = "application/json", state: State = State.SUCCEEDED) -> str:
    """An invocation with callback URL, settled as the dispatcher would: its callback is due."""
    inv_id = uuid.uuid4().hex
    function = "fn" if tenant == "default" else f"{tenant}.fn"
    store = InvocationStore(redis)
    submitted = await store.submit(inv_id, function, tenant, AsyncPolicy(), b'{"q":1}', "application/json",
                                   callback_url=url)
    assert submitted.outcome == "created"
    entries = [e for e in await store.read(function, "normal", "dispatcher", 100) if e.invocation_id == inv_id]
    claim = await store.claim(entries[0], "dispatcher", RETENTION)
    assert claim.action == "run"
    assert await store.settle(entries[0], claim.lease, state, RETENTION, status=200, result=result,
                              result_type=result_type)
    return inv_id


def deliverer(redis, secrets: SigningSecrets, session, name: str = "gw-1", **kw) -> Deliverer:
    kw.setdefault("poll", 0.02)
    return Deliverer(CallbackStore(redis), secrets, session, deliverer_id=name, **kw)


async def until(predicate, timeout: float = 15.0) -> None:
    """Wait (bounded) for an async PREDICATE to hold."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def settled_callback(redis, inv_id: str):
    inv = await InvocationStore(redis).get(inv_id)
    return inv.callback if inv.callback["state"] in ("delivered", "failed") else None


async def run_until_settled(d: Deliverer, redis, inv_id: str) -> dict:
    task = asyncio.create_task(d.run())
    try:
        await until(lambda: settled_callback(redis, inv_id))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return await settled_callback(redis, inv_id)


async def test_a_callback_is_signed_and_carries_the_invocation(aredis, receivers, sessions):
    secrets = SigningSecrets(CallbackStore(aredis), None)
    secret = await secrets.platform()
    rx = await receivers(secret)
    inv_id = await ready(aredis, rx.url)
    raw = await aredis.hgetall(keys.invocation(inv_id))
    assert raw[b"callback_state"] == b"pending" and await aredis.zscore(keys.ASYNC_CALLBACKS, inv_id) is not None

    cb = await run_until_settled(deliverer(aredis, secrets, sessions()), aredis, inv_id)
    assert cb["state"] == "delivered" and cb["attempts"] == 1 and cb["status"] == 200 and cb["error"] is None
    assert rx.posts == {inv_id: 1} and rx.bad == 0 and rx.deliveries == ["1"]
    body = rx.bodies[0]
    assert body["id"] == inv_id and body["state"] == "succeeded" and body["result"] == {"answer": 42}
    assert body["result_type"] == "application/json" and "callback" not in body
    raw = await aredis.hgetall(keys.invocation(inv_id))
    assert float(raw[b"callback_delivered"]) > 0 and await aredis.zscore(keys.ASYNC_CALLBACKS, inv_id) is None
    assert await aredis.ttl(keys.invocation(inv_id)) > 0       # the settle's retention still holds


async def test_a_500_then_200_is_posted_twice_and_delivered(aredis, receivers, sessions):
    secrets = SigningSecrets(CallbackStore(aredis), None)
    rx = await receivers(await secrets.platform(), [500, 200])
    inv_id = await ready(aredis, rx.url)
    d = deliverer(aredis, secrets, sessions())
    cb = await run_until_settled(d, aredis, inv_id)
    assert cb["state"] == "delivered" and cb["attempts"] == 2 and cb["status"] == 200
    assert rx.posts == {inv_id: 2} and rx.deliveries == ["1", "2"] and rx.bad == 0
    # nothing left to deliver: no third POST can happen
    assert await aredis.zscore(keys.ASYNC_CALLBACKS, inv_id) is None and await d.pass_once() == []


async def test_a_read_timeout_is_posted_once_and_failed(aredis, receivers, sessions):
    secrets = SigningSecrets(CallbackStore(aredis), None)
    rx = await receivers(await secrets.platform(), ["sleep"])
    inv_id = await ready(aredis, rx.url)
    d = deliverer(aredis, secrets, sessions(), read_timeout=0.3)
    cb = await run_until_settled(d, aredis, inv_id)
    assert cb["state"] == "failed" and cb["attempts"] == 1 and cb["status"] is None
    assert "no answer within 0.3s" in cb["error"] and "may have acted" in cb["error"]
    assert rx.posts == {inv_id: 1}
    assert await aredis.zscore(keys.ASYNC_CALLBACKS, inv_id) is None and await d.pass_once() == []


async def test_a_refused_connection_is_retried_until_the_receiver_is_up(aredis, receivers, sessions):
    secrets = SigningSecrets(CallbackStore(aredis), None)
    with socket.socket() as s:        # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inv_id = await ready(aredis, f"http://127.0.0.1:{port}/hook")
    d = deliverer(aredis, secrets, sessions())
    [task] = await d.pass_once()
    decision = await task
    assert decision.state == CallbackState.PENDING and "could not connect" in decision.error
    inv = await InvocationStore(aredis).get(inv_id)
    assert inv.callback["state"] == "pending" and inv.callback["attempts"] == 1
    due = await aredis.zscore(keys.ASYNC_CALLBACKS, inv_id)
    assert due == pytest.approx(time.time() + 1.0, abs=0.5)     # the first backoff, 1 s

    rx = await receivers(await secrets.platform(), [200], port=port)
    cb = await run_until_settled(d, aredis, inv_id)
    assert cb["state"] == "delivered" and cb["attempts"] == 2 and rx.posts == {inv_id: 1}
    assert rx.deliveries == ["2"]


async def test_a_4xx_fails_at_once_and_max_attempts_ends_in_failed(aredis, receivers, sessions):
    secrets = SigningSecrets(CallbackStore(aredis), None)
    secret = await secrets.platform()
    gone = await receivers(secret, [410])
    busy = await receivers(secret, [503])
    one, two = await ready(aredis, gone.url), await ready(aredis, busy.url)
    d = deliverer(aredis, secrets, sessions(), max_attempts=2)
    cb = await run_until_settled(d, aredis, one)
    assert cb["state"] == "failed" and cb["attempts"] == 1 and cb["status"] == 410 and "410" in cb["error"]
    cb = await run_until_settled(d, aredis, two)
    assert cb["state"] == "failed" and cb["attempts"] == 2 and cb["status"] == 503
    assert "gave up after 2 attempts" in cb["error"] and busy.posts == {two: 2}


async def test_two_deliverers_racing_deliver_each_callback_once(aredis, new_aredis, receivers, sessions):
    secrets = SigningSecrets(CallbackStore(aredis), None)
    rx = await receivers(await secrets.platform())
    ids = [await ready(aredis, rx.url) for _ in range(40)]
    # each deliverer on its own connection, so their claims really interleave in Redis
    racers = [deliverer(new_aredis(), SigningSecrets(CallbackStore(new_aredis()), None), sessions(), f"gw-{n}",
                        concurrency=4) for n in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in racers]
    try:
        async def all_delivered() -> bool:
            states = [(await settled_callback(aredis, i) or {}).get("state") for i in ids]
            return states == ["delivered"] * len(ids)
        await until(all_delivered)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert rx.posts == {i: 1 for i in ids} and rx.bad == 0
    delivered_by = Counter([(await aredis.hget(keys.invocation(i), "callback_deliverer")).decode() for i in ids])
    assert set(delivered_by) <= {"gw-0", "gw-1"} and sum(delivered_by.values()) == 40


async def test_a_stale_deliverer_cannot_overwrite_and_a_lost_attempt_is_taken_up(aredis):
    store = CallbackStore(aredis)
    inv_id = await ready(aredis, "http://127.0.0.1:9/hook")
    now = time.time()
    [first] = await store.claim("gw-a", 10, now=now)
    assert first.attempt == 1 and await store.claim("gw-b", 10, now=now) == []     # held
    # gw-a stops mid-POST: when its lease ends another gateway takes the callback up
    [second] = await store.claim("gw-b", 10, now=now + LEASE + 1)
    assert second.attempt == 2 and second.token > first.token
    assert not await store.record(inv_id, first.token, Decision(CallbackState.DELIVERED), 200)
    assert (await aredis.hget(keys.invocation(inv_id), "callback_state")) == b"delivering"
    assert await store.record(inv_id, second.token, Decision(CallbackState.FAILED, error="x"), 404)
    cb = (await InvocationStore(aredis).get(inv_id)).callback
    assert cb == {"url": "http://127.0.0.1:9/hook", "state": "failed", "attempts": 2, "error": "x", "status": 404,
                  "delivered": None, "next_at": None}

    # the last allowed attempt lost too: failed, not sent again
    other = await ready(aredis, "http://127.0.0.1:9/hook")
    now = time.time()
    [claimed] = await store.claim("gw-a", 10, max_attempts=1, now=now)
    assert claimed.invocation_id == other
    assert await store.claim("gw-b", 10, max_attempts=1, now=now + LEASE + 1) == []
    cb = (await InvocationStore(aredis).get(other)).callback
    assert cb["state"] == "failed" and cb["attempts"] == 1 and "lost" in cb["error"]
    assert await aredis.zscore(keys.ASYNC_CALLBACKS, other) is None


async def test_a_replayed_invocation_gets_a_new_series_of_attempts(aredis):
    store, invocations = CallbackStore(aredis), InvocationStore(aredis)
    inv_id = await ready(aredis, "http://127.0.0.1:9/hook", state=State.DEAD)
    [c] = await store.claim("gw", 10)
    assert await store.record(inv_id, c.token, Decision(CallbackState.FAILED, error="gone"), 410)
    inv = await invocations.get(inv_id)
    assert await invocations.replay(inv, 3600) == "dead"
    # queued again: a callback still listed would be dropped, not sent
    [entry] = await invocations.read("fn", "normal", "dispatcher", 10)
    claim = await invocations.claim(entry, "dispatcher", RETENTION)
    assert await invocations.settle(entry, claim.lease, State.SUCCEEDED, RETENTION, status=200, result=b"1",
                                    result_type="application/json")
    [again] = await store.claim("gw", 10)
    assert again.attempt == 1
    cb = (await invocations.get(inv_id)).callback
    assert cb["state"] == "delivering" and cb["error"] is None and cb["status"] is None


async def test_records_gone_or_not_settled_leave_the_set(aredis):
    store = CallbackStore(aredis)
    inv_id = await ready(aredis, "http://127.0.0.1:9/hook")
    await aredis.delete(keys.invocation(inv_id))          # expired
    await aredis.zadd(keys.ASYNC_CALLBACKS, {"nope": 0})  # never existed
    assert await store.claim("gw", 10) == []
    assert await aredis.zcard(keys.ASYNC_CALLBACKS) == 0


async def test_every_gateway_agrees_on_the_platform_secret_and_tenants_get_their_own(aredis, new_aredis,
                                                                                     receivers, sessions):
    a = SigningSecrets(CallbackStore(new_aredis()), None)
    b = SigningSecrets(CallbackStore(new_aredis()), None)
    one, two = await asyncio.gather(a.platform(), b.platform())
    assert one == two and len(one) == 32 and await aredis.get(keys.CALLBACK_SECRET) == one
    acme = await a.for_tenant("acme")
    assert acme == signing.tenant_secret(one, "acme") != one
    configured = SigningSecrets(CallbackStore(aredis), b"c" * 32)
    assert await configured.platform() == b"c" * 32

    # a tenant's callback is signed with the tenant's secret, not the platform's
    rx = await receivers(acme)
    inv_id = await ready(aredis, rx.url, tenant="acme", result=b"\x00\x01", result_type="application/octet-stream")
    cb = await run_until_settled(deliverer(aredis, a, sessions()), aredis, inv_id)
    assert cb["state"] == "delivered" and rx.posts == {inv_id: 1} and rx.bad == 0
    assert rx.bodies[0]["result"] == "AAE=" and rx.bodies[0]["result_encoding"] == "base64"
    assert rx.bodies[0]["tenant"] == "acme"

"""gantry.AsyncClient: the platform's API from asyncio, on aiohttp (the gateway's own HTTP
library).  The same operations, arguments and records as gantry.Client (gantry.sdk.sync);
use it as ``async with AsyncClient() as c:`` or call ``await c.close()``."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

import aiohttp
from gantry_runtime import wire

from ..client import Client as _Settings, StreamTail
from . import calls, deploy as _deploy
from .calls import Call
from .errors import ConnectionFailed, StreamError, WaitTimeout, error_for
from .sync import Since
from .types import (SETTLED, ApiKey, Cancelled, Deployment, FunctionSummary, Invocation, InvokeResult, LogEntry,
                    Mode, Node, Priority, ScalingChange, SecretList, Submission, Tenant, Whoami)


class AsyncClient:
    """As gantry.Client, awaitable; one pooled aiohttp session per client."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 330.0) -> None:
        settings = _Settings.resolve(url, api_key)
        self.url, self.api_key, self.timeout = settings.url, settings.api_key, timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"gantry.AsyncClient({self.url!r})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- transport -------------------------------------------------------------------------

    async def _open(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                    *, timeout: float | None = None, keep_function_errors: bool = False) -> aiohttp.ClientResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        hdrs = dict(headers or {})
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        try:
            resp = await self._session.request(method, self.url + path, data=body, headers=hdrs,
                                               timeout=aiohttp.ClientTimeout(total=timeout or self.timeout))
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(0, "unreachable", f"cannot reach {self.url} ({exc}); is `gantry up` running?") from None
        if resp.status >= 400:
            from_function = bool(resp.headers.get(wire.INVOCATION_ID))
            if not (keep_function_errors and from_function):
                raw = await resp.read()
                resp.release()
                raise error_for(resp.status, raw, dict(resp.headers), from_function)
        return resp

    async def _do(self, call: Call, timeout: float | None = None) -> Any:
        resp = await self._open(call.method, call.path, call.body(),
                                {"Content-Type": "application/json"} if call.json is not None else None,
                                timeout=timeout)
        async with resp:
            raw = await resp.read()
        return call.parse(json.loads(raw) if raw else None)

    async def request(self, method: str, path: str, json_body: Any = None) -> Any:
        """Any API call by its path (docs/api.md): the decoded JSON answer."""
        return await self._do(Call(method, path, json_body))

    # --- functions -------------------------------------------------------------------------

    async def deploy(self, path: str, progress: _deploy.Progress | None = None, *, tenant: str | None = None,
                     wait: float | None = 60.0) -> Deployment:
        """As Client.deploy; the build runs in a thread."""
        result, spec = await asyncio.to_thread(_deploy.build, path, progress)
        done = await self.deploy_image(spec, result.image, tenant=tenant)
        if progress:
            progress(f"deployed {done.name} version {done.version} ({done.image})")
        if wait:
            deadline = time.monotonic() + wait
            while not _deploy.takes_traffic(await self.get_function(done.name), done.version,
                                            result.spec.scaling.min_instances):
                if time.monotonic() > deadline:
                    raise WaitTimeout(0, "wait_timeout", f"{done.name} version {done.version} did not take "
                                                         f"traffic within {wait:g}s")
                await asyncio.sleep(0.2)
        return done

    async def deploy_image(self, spec: dict[str, Any], image: str, *, tenant: str | None = None) -> Deployment:
        answer = await self._do(calls.deploy_image(spec, image, tenant))
        return Deployment(answer["name"], answer["tenant"], answer["version"], answer["active"], image,
                          f"{self.url}/v1/invoke/{answer['name']}")

    async def list_functions(self, *, tenant: str | None = None) -> list[FunctionSummary]:
        return await self._do(calls.list_functions(tenant))

    async def get_function(self, name: str) -> FunctionSummary:
        return await self._do(calls.get_function(name))

    async def versions(self, name: str) -> tuple[int, int]:
        fn = await self.get_function(name)
        return fn["latest"], fn["active"]

    async def delete_function(self, name: str) -> None:
        await self._do(calls.delete_function(name))

    async def scale(self, name: str, min_instances: int) -> None:
        await self._do(calls.scale(name, min_instances))

    async def configure_scaling(self, name: str, *, min_instances: int | None = None,
                                max_instances: int | None = None, concurrency: int | None = None,
                                target_utilization: float | None = None, scale_up_cooldown: str | float | None = None,
                                scale_down_cooldown: str | float | None = None, idle_timeout: str | float | None = None,
                                keep_paused: str | float | None = None) -> ScalingChange:
        """Change the function's scaling policy without a build: the fields given (None:
        unchanged; durations as seconds or "30s", "5m") replace the latest version's and are
        registered, with the same image, as a new version that rolls out as a deploy does.  A
        change that changes nothing makes no version (``changed`` False).  A bad value raises
        BadRequest naming the field (``scaling.min_instances: ...``)."""
        return await self._do(calls.configure_scaling(name, dict(
            min_instances=min_instances, max_instances=max_instances, concurrency=concurrency,
            target_utilization=target_utilization, scale_up_cooldown=scale_up_cooldown,
            scale_down_cooldown=scale_down_cooldown, idle_timeout=idle_timeout, keep_paused=keep_paused)))

    async def warm(self, name: str, instances: int, *, for_: str | float = "10m") -> dict[str, Any]:
        """Hold at least INSTANCES ready for ``for_`` (a duration or seconds; 0 instances ends the
        hold): ``{"name", "instances", "until"}``."""
        return await self._do(calls.warm(name, instances, for_))

    async def decisions(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The scheduler's last scaling decisions for NAME, newest first (time, from, to, reason)."""
        return await self._do(calls.decisions(name, limit))

    async def get_metrics(self, name: str | None = None, *, tenant: str | None = None, range: str = "1h",
                    step: str | None = None) -> dict[str, Any]:
        """Per-minute metrics of function NAME (or of a whole TENANT) over RANGE: invocations,
        errors by code, throttles, cold starts, p50/p95/p99 (docs/metrics.md)."""
        if (name is None) == (tenant is None):
            raise ValueError("get_metrics: name a function or a tenant, not both")
        return await self._do(calls.metrics(name, tenant, range, step))

    async def nodes(self) -> list[Node]:
        return await self._do(calls.nodes())

    async def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The gateway's ``{"status": "ok", "gateway": ID}`` (as Client.health)."""
        return await self._do(calls.health(), timeout=timeout)

    # --- logs ------------------------------------------------------------------------------

    async def stream_logs(self, name: str, *, since: Since | None = None, instance: str | None = None,
                          level: str | None = None, tail: int | None = None, follow: bool = True,
                          poll: float = 0.5) -> AsyncIterator[LogEntry]:
        """As Client.stream_logs: ``async for entry in c.stream_logs(name): ...``."""
        pager = calls.LogPager(name, since, instance, level, tail, follow)
        while True:
            entries, then = pager.feed(await self._do(pager.call()))
            for raw in entries:
                yield LogEntry.from_api(raw)
            if then == "stop":
                return
            if then == "poll":
                await asyncio.sleep(poll)

    async def logs(self, name: str, *, since: Since | None = None, instance: str | None = None,
                   level: str | None = None, tail: int | None = None) -> list[LogEntry]:
        return [e async for e in self.stream_logs(name, since=since, instance=instance, level=level, tail=tail,
                                                  follow=False)]

    # --- invoke ----------------------------------------------------------------------------

    async def invoke(self, name: str, payload: Any = None, *, stream: bool = False, mode: Mode = "sync",
                     idempotency_key: str | None = None, priority: Priority | None = None,
                     callback_url: str | None = None, content_type: str | None = None,
                     timeout: float | None = None) -> InvokeResult | Submission | AsyncIterator[bytes]:
        """As Client.invoke: mode="sync" gives the answer (stream=True: an async iterator of its
        chunks, ``async for chunk in await c.invoke(..., stream=True)``; or invoke_stream),
        mode="async" the 202's id and state."""
        if stream:
            if mode == "async":
                raise ValueError("stream=True does not go with mode='async' (the result is kept)")
            return self.invoke_stream(name, payload, idempotency_key=idempotency_key, content_type=content_type,
                                      timeout=timeout)
        path, body, headers = calls.invoke_request(name, payload, mode=mode, content_type=content_type,
                                                   idempotency_key=idempotency_key, priority=priority,
                                                   callback_url=callback_url, timeout=timeout)
        async with await self._open("POST", path, body, headers) as resp:
            raw = await resp.read()
            return json.loads(raw) if mode == "async" else InvokeResult(resp.status, raw, dict(resp.headers))

    async def invoke_stream(self, name: str, payload: Any = None, *, idempotency_key: str | None = None,
                            content_type: str | None = None, timeout: float | None = None) -> AsyncIterator[bytes]:
        """A sync invocation's answer chunk by chunk (``async for chunk in ...``); a stream that
        fails part-way raises StreamError after what came."""
        path, body, headers = calls.invoke_request(name, payload, mode="sync", content_type=content_type,
                                                   idempotency_key=idempotency_key, priority=None,
                                                   callback_url=None, timeout=timeout)
        resp = await self._open("POST", path, body, headers)
        tail = StreamTail(sse=resp.content_type == wire.EVENT_STREAM)
        async with resp:
            while True:
                try:
                    chunk = await resp.content.readany()
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    rest, code, message = tail.broken(exc)
                    if rest:
                        yield rest
                    raise StreamError(resp.status, code, message) from None
                if not chunk:
                    rest = tail.finish()
                    if rest:
                        yield rest
                    return
                shown = tail.feed(chunk)
                if shown:
                    yield shown

    # --- async invocations (docs/async.md) -------------------------------------------------

    async def get_invocation(self, inv_id: str, *, wait: float | None = None) -> Invocation:
        return await self._do(calls.get_invocation(inv_id, wait), timeout=(wait or 0) + self.timeout)

    async def wait(self, inv_id: str, timeout: float = 300.0) -> Invocation:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            began = time.monotonic()
            inv = await self.get_invocation(inv_id, wait=min(calls.MAX_WAIT, max(0.0, left)))
            if inv["state"] in SETTLED:
                return inv
            if left <= 0:
                raise WaitTimeout(0, "wait_timeout", f"invocation {inv_id} is still {inv['state']} after {timeout:g}s")
            if time.monotonic() - began < 0.2:
                await asyncio.sleep(0.2)

    async def invocation_result(self, inv_id: str) -> InvokeResult:
        async with await self._open("GET", calls.invocation_result_path(inv_id), keep_function_errors=True) as resp:
            return InvokeResult(resp.status, await resp.read(), dict(resp.headers))

    async def cancel(self, inv_id: str) -> Cancelled:
        return await self._do(calls.cancel(inv_id))

    async def dead_letters(self, *, function: str | None = None, tenant: str | None = None,
                           limit: int | None = None) -> AsyncIterator[Invocation]:
        after, given = None, 0
        while limit is None or given < limit:
            page = await self._do(calls.dead_letters_page(function, tenant, after,
                                                          1000 if limit is None else min(1000, limit - given)))
            for item in page["invocations"]:
                yield item
                given += 1
            if page["next"] is None or page["next"] == after:
                return
            after = page["next"]

    async def get_dead_letter(self, inv_id: str) -> Invocation:
        return await self._do(calls.get_dead_letter(inv_id))

    async def replay(self, inv_id: str) -> Invocation:
        return await self._do(calls.replay(inv_id))

    async def purge(self, inv_id: str) -> None:
        await self._do(calls.purge(inv_id))

    async def schedules(self, *, tenant: str | None = None, function: str | None = None) -> list[dict[str, Any]]:
        return await self._do(calls.schedules(tenant, function))

    async def callback_secret(self) -> dict[str, Any]:
        return await self._do(calls.callback_secret())

    # --- tenants, keys, secrets, usage (docs/tenants.md) -----------------------------------

    async def whoami(self) -> Whoami:
        return await self._do(calls.whoami())

    async def create_tenant(self, tenant_id: str, **fields: Any) -> Tenant:
        return await self._do(calls.create_tenant(tenant_id, fields))

    async def list_tenants(self) -> list[Tenant]:
        return await self._do(calls.list_tenants())

    async def get_tenant(self, tenant_id: str) -> Tenant:
        return await self._do(calls.get_tenant(tenant_id))

    async def update_tenant(self, tenant_id: str, **fields: Any) -> Tenant:
        return await self._do(calls.update_tenant(tenant_id, fields))

    async def delete_tenant(self, tenant_id: str) -> dict[str, Any]:
        return await self._do(calls.delete_tenant(tenant_id))

    async def create_key(self, *, tenant: str | None = None, scope: str | None = None,
                         functions: list[str] | None = None, ttl: str | float | None = None,
                         note: str | None = None) -> ApiKey:
        return await self._do(calls.create_key(tenant, {"scope": scope, "functions": functions, "ttl": ttl,
                                                        "note": note}))

    async def list_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        return await self._do(calls.list_keys(tenant))

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return await self._do(calls.revoke_key(key_id))

    async def set_secret(self, name: str, value: str, *, tenant: str | None = None) -> dict[str, Any]:
        return await self._do(calls.set_secret(name, value, tenant))

    async def list_secrets(self, *, tenant: str | None = None) -> SecretList:
        return await self._do(calls.list_secrets(tenant))

    async def delete_secret(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        return await self._do(calls.delete_secret(name, tenant))

    async def usage(self, *, tenant: str | None = None, since: str | None = None,
                    until: str | None = None) -> dict[str, Any]:
        return await self._do(calls.usage(tenant, since, until))

    async def audit(self, *, tenant: str | None = None, after: str | None = None,
                    limit: int | None = None) -> dict[str, Any]:
        return await self._do(calls.audit(tenant, after, limit))

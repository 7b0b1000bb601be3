"""gantry.Client: the platform's API from synchronous Python, on the standard library
(urllib; no dependency).  docs/sdk.md shows it in use."""
from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any, Iterator, Literal, overload

from gantry_runtime import wire

from ..client import Client as _Settings, StreamTail
from . import calls, deploy as _deploy
from .calls import Call
from .errors import ConnectionFailed, StreamError, WaitTimeout, error_for
from .types import (SETTLED, ApiKey, Cancelled, Deployment, FunctionSummary, Invocation, InvokeResult, LogEntry,
                    Mode, Node, Priority, ScalingChange, SecretList, Submission, Tenant, Whoami)

Since = str | float | datetime | timedelta


class Client:
    """A client of one Gantry platform.  URL and API_KEY default to GANTRY_URL / GANTRY_API_KEY,
    then the file `gantry up` writes (~/.config/gantry/config.toml), then http://127.0.0.1:8000.
    Every error answer raises a gantry.sdk.errors.GantryError subclass."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 330.0) -> None:
        settings = _Settings.resolve(url, api_key)
        self.url, self.api_key, self.timeout = settings.url, settings.api_key, timeout

    def __repr__(self) -> str:
        return f"gantry.Client({self.url!r})"

    # --- transport -------------------------------------------------------------------------

    def _open(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
              *, timeout: float | None = None, keep_function_errors: bool = False):
        """The response; an error status raises its GantryError, unless KEEP_FUNCTION_ERRORS
        and the answer is a function's (it carries an invocation id): then it is returned."""
        hdrs = dict(headers or {})
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            from_function = bool(exc.headers.get(wire.INVOCATION_ID))
            if keep_function_errors and from_function:
                return exc
            raise error_for(exc.code, exc.read(), dict(exc.headers), from_function) from None
        except urllib.error.URLError as exc:
            raise ConnectionFailed(0, "unreachable", f"cannot reach {self.url} ({exc.reason}); "
                                                     f"is `gantry up` running?") from None

    def _do(self, call: Call, timeout: float | None = None) -> Any:
        with self._open(call.method, call.path, call.body(),
                        {"Content-Type": "application/json"} if call.json is not None else None,
                        timeout=timeout) as resp:
            raw = resp.read()
        return call.parse(json.loads(raw) if raw else None)

    def request(self, method: str, path: str, json_body: Any = None) -> Any:
        """Any API call by its path (docs/api.md): the decoded JSON answer."""
        return self._do(Call(method, path, json_body))

    # --- functions -------------------------------------------------------------------------

    def deploy(self, path: str, progress: _deploy.Progress | None = None, *, tenant: str | None = None,
               wait: float | None = 60.0) -> Deployment:
        """Build the function directory PATH (its gantry.toml) on the local Docker engine and
        deploy it as a new version, as `gantry deploy`; PROGRESS gets each build line.  With
        WAIT, return once the version takes traffic (WaitTimeout after WAIT seconds)."""
        result, spec = _deploy.build(path, progress)
        done = self.deploy_image(spec, result.image, tenant=tenant)
        if progress:
            progress(f"deployed {done.name} version {done.version} ({done.image})")
        if wait:
            deadline = time.monotonic() + wait
            while not _deploy.takes_traffic(self.get_function(done.name), done.version,
                                            result.spec.scaling.min_instances):
                if time.monotonic() > deadline:
                    raise WaitTimeout(0, "wait_timeout", f"{done.name} version {done.version} did not take "
                                                         f"traffic within {wait:g}s")
                time.sleep(0.2)
        return done

    def deploy_image(self, spec: dict[str, Any], image: str, *, tenant: str | None = None) -> Deployment:
        """Deploy an image built before (spec: the manifest's form, docs/api.md)."""
        answer = self._do(calls.deploy_image(spec, image, tenant))
        return Deployment(answer["name"], answer["tenant"], answer["version"], answer["active"], image,
                          f"{self.url}/v1/invoke/{answer['name']}")

    def list_functions(self, *, tenant: str | None = None) -> list[FunctionSummary]:
        return self._do(calls.list_functions(tenant))

    def get_function(self, name: str) -> FunctionSummary:
        """The function with its specs (latest and active version's) and its instances."""
        return self._do(calls.get_function(name))

    def versions(self, name: str) -> tuple[int, int]:
        """(latest, active) version numbers of the function."""
        fn = self.get_function(name)
        return fn["latest"], fn["active"]

    def delete_function(self, name: str) -> None:
        """Remove the function, its versions and its logs; its instances are drained."""
        self._do(calls.delete_function(name))

    def scale(self, name: str, min_instances: int) -> None:
        """Keep at least MIN_INSTANCES ready (an override of the manifest's scaling.min_instances)."""
        self._do(calls.scale(name, min_instances))

    def configure_scaling(self, name: str, *, min_instances: int | None = None,
                          max_instances: int | None = None, concurrency: int | None = None,
                          target_utilization: float | None = None, scale_up_cooldown: str | float | None = None,
                          scale_down_cooldown: str | float | None = None, idle_timeout: str | float | None = None,
                          keep_paused: str | float | None = None) -> ScalingChange:
        """Change the function's scaling policy without a build: the fields given (None:
        unchanged; durations as seconds or "30s", "5m") replace the latest version's and are
        registered, with the same image, as a new version that rolls out as a deploy does.  A
        change that changes nothing makes no version (``changed`` False).  A bad value raises
        BadRequest naming the field (``scaling.min_instances: ...``)."""
        return self._do(calls.configure_scaling(name, dict(
            min_instances=min_instances, max_instances=max_instances, concurrency=concurrency,
            target_utilization=target_utilization, scale_up_cooldown=scale_up_cooldown,
            scale_down_cooldown=scale_down_cooldown, idle_timeout=idle_timeout, keep_paused=keep_paused)))

    def warm(self, name: str, instances: int, *, for_: str | float = "10m") -> dict[str, Any]:
        """Hold at least INSTANCES ready for ``for_`` (a duration or seconds; 0 instances ends the
        hold): ``{"name", "instances", "until"}``."""
        return self._do(calls.warm(name, instances, for_))

    def decisions(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The scheduler's last scaling decisions for NAME, newest first (time, from, to, reason)."""
        return self._do(calls.decisions(name, limit))

    def get_metrics(self, name: str | None = None, *, tenant: str | None = None, range: str = "1h",
                    step: str | None = None) -> dict[str, Any]:
        """Per-minute metrics of function NAME (or of a whole TENANT) over RANGE: invocations,
        errors by code, throttles, cold starts, p50/p95/p99 (docs/metrics.md)."""
        if (name is None) == (tenant is None):
            raise ValueError("get_metrics: name a function or a tenant, not both")
        return self._do(calls.metrics(name, tenant, range, step))

    def nodes(self) -> list[Node]:
        return self._do(calls.nodes())

    def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The gateway's ``{"status": "ok", "gateway": ID}`` while it serves (no key needed; it
        does not check Redis); ConnectionFailed while nothing answers.  TIMEOUT: for this call."""
        return self._do(calls.health(), timeout=timeout)

    # --- logs ------------------------------------------------------------------------------

    def stream_logs(self, name: str, *, since: Since | None = None, instance: str | None = None,
                    level: str | None = None, tail: int | None = None, follow: bool = True,
                    poll: float = 0.5) -> Iterator[LogEntry]:
        """The function's log entries, oldest first, filtered on the platform: SINCE (a duration
        such as "10m", an ISO time, a datetime, a timedelta, epoch seconds), INSTANCE (an id or
        a prefix), LEVEL (this and above), TAIL (only the last N to start with).  FOLLOW: keep
        waiting for new lines (every POLL seconds) until the caller stops iterating."""
        pager = calls.LogPager(name, since, instance, level, tail, follow)
        while True:
            entries, then = pager.feed(self._do(pager.call()))
            for raw in entries:
                yield LogEntry.from_api(raw)
            if then == "stop":
                return
            if then == "poll":
                time.sleep(poll)

    def logs(self, name: str, *, since: Since | None = None, instance: str | None = None, level: str | None = None,
             tail: int | None = None) -> list[LogEntry]:
        """The log entries kept now (about GANTRY_LOG_MAXLEN per function), filtered as stream_logs."""
        return list(self.stream_logs(name, since=since, instance=instance, level=level, tail=tail, follow=False))

    # --- invoke ----------------------------------------------------------------------------

    @overload
    def invoke(self, name: str, payload: Any = None, *, stream: Literal[False] = False, mode: Literal["sync"] = "sync",
               idempotency_key: str | None = None, content_type: str | None = None,
               timeout: float | None = None) -> InvokeResult: ...

    @overload
    def invoke(self, name: str, payload: Any = None, *, stream: Literal[True], mode: Literal["sync"] = "sync",
               idempotency_key: str | None = None, content_type: str | None = None,
               timeout: float | None = None) -> Iterator[bytes]: ...

    @overload
    def invoke(self, name: str, payload: Any = None, *, mode: Literal["async"], idempotency_key: str | None = None,
               priority: Priority | None = None, callback_url: str | None = None,
               content_type: str | None = None, timeout: float | None = None) -> Submission: ...

    def invoke(self, name, payload=None, *, stream=False, mode: Mode = "sync", idempotency_key=None, priority=None,
               callback_url=None, content_type=None, timeout=None):
        """Call NAME with PAYLOAD (bytes as they are, anything else as JSON).  mode="sync": the
        answer (stream=True: its chunks as they arrive; a stream that fails part-way raises
        StreamError after what came).  mode="async": queue it; the 202's id and state
        (get_invocation / wait / invocation_result follow it).  IDEMPOTENCY_KEY: run once per key.
        TIMEOUT lowers the function's time limit for this call."""
        if stream and mode == "async":
            raise ValueError("stream=True does not go with mode='async' (the result is kept)")
        path, body, headers = calls.invoke_request(name, payload, mode=mode, content_type=content_type,
                                                   idempotency_key=idempotency_key, priority=priority,
                                                   callback_url=callback_url, timeout=timeout)
        if mode == "async":
            with self._open("POST", path, body, headers) as resp:
                return json.loads(resp.read())
        if stream:
            return self._stream(path, body, headers)
        with self._open("POST", path, body, headers) as resp:
            return InvokeResult(resp.status, resp.read(), dict(resp.headers))

    def _stream(self, path: str, body: bytes, headers: dict[str, str]) -> Iterator[bytes]:
        resp = self._open("POST", path, body, headers)
        tail = StreamTail(sse=resp.headers.get_content_type() == wire.EVENT_STREAM)
        with resp:
            while True:
                try:
                    chunk = resp.read1(65536)
                except (http.client.HTTPException, OSError) as exc:
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

    def get_invocation(self, inv_id: str, *, wait: float | None = None) -> Invocation:
        """The invocation's record; WAIT: hold up to that many seconds (at most 60) for it to settle."""
        return self._do(calls.get_invocation(inv_id, wait), timeout=(wait or 0) + self.timeout)

    def wait(self, inv_id: str, timeout: float = 300.0) -> Invocation:
        """The invocation once settled (succeeded, failed, dead, cancelled or expired), by long
        polls; WaitTimeout after TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            began = time.monotonic()
            inv = self.get_invocation(inv_id, wait=min(calls.MAX_WAIT, max(0.0, left)))
            if inv["state"] in SETTLED:
                return inv
            if left <= 0:
                raise WaitTimeout(0, "wait_timeout", f"invocation {inv_id} is still {inv['state']} after {timeout:g}s")
            if time.monotonic() - began < 0.2:     # answered early unsettled: don't spin
                time.sleep(0.2)

    def invocation_result(self, inv_id: str) -> InvokeResult:
        """A settled invocation's result as its function answered (status, headers, bytes);
        a failed one's too.  Conflict (not_settled) before it settles."""
        with self._open("GET", calls.invocation_result_path(inv_id), keep_function_errors=True) as resp:
            return InvokeResult(resp.status, resp.read(), dict(resp.headers))

    def cancel(self, inv_id: str) -> Cancelled:
        """Cancel a queued or retrying invocation (Conflict once it runs or has settled)."""
        return self._do(calls.cancel(inv_id))

    def dead_letters(self, *, function: str | None = None, tenant: str | None = None,
                     limit: int | None = None) -> Iterator[Invocation]:
        """Dead letters, oldest first, page by page (up to LIMIT)."""
        after, given = None, 0
        while limit is None or given < limit:
            page = self._do(calls.dead_letters_page(function, tenant, after,
                                                    1000 if limit is None else min(1000, limit - given)))
            for item in page["invocations"]:
                yield item
                given += 1
            if page["next"] is None or page["next"] == after:
                return
            after = page["next"]

    def get_dead_letter(self, inv_id: str) -> Invocation:
        return self._do(calls.get_dead_letter(inv_id))

    def replay(self, inv_id: str) -> Invocation:
        """Queue a dead letter again: same id, fresh attempts."""
        return self._do(calls.replay(inv_id))

    def purge(self, inv_id: str) -> None:
        self._do(calls.purge(inv_id))

    def schedules(self, *, tenant: str | None = None, function: str | None = None) -> list[dict[str, Any]]:
        """The cron schedules of deployed functions, with their next and last firing."""
        return self._do(calls.schedules(tenant, function))

    def callback_secret(self) -> dict[str, Any]:
        """The tenant's key for checking signed callbacks (docs/async.md)."""
        return self._do(calls.callback_secret())

    # --- tenants, keys, secrets, usage (docs/tenants.md) -----------------------------------

    def whoami(self) -> Whoami:
        return self._do(calls.whoami())

    def create_tenant(self, tenant_id: str, **fields: Any) -> Tenant:
        """fields: name, isolation, quotas, features (docs/tenants.md)."""
        return self._do(calls.create_tenant(tenant_id, fields))

    def list_tenants(self) -> list[Tenant]:
        return self._do(calls.list_tenants())

    def get_tenant(self, tenant_id: str) -> Tenant:
        return self._do(calls.get_tenant(tenant_id))

    def update_tenant(self, tenant_id: str, **fields: Any) -> Tenant:
        return self._do(calls.update_tenant(tenant_id, fields))

    def delete_tenant(self, tenant_id: str) -> dict[str, Any]:
        return self._do(calls.delete_tenant(tenant_id))

    def create_key(self, *, tenant: str | None = None, scope: str | None = None, functions: list[str] | None = None,
                   ttl: str | float | None = None, note: str | None = None) -> ApiKey:
        """A new API key; its secret (``key``) is in this answer only."""
        return self._do(calls.create_key(tenant, {"scope": scope, "functions": functions, "ttl": ttl, "note": note}))

    def list_keys(self, *, tenant: str | None = None) -> list[ApiKey]:
        return self._do(calls.list_keys(tenant))

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._do(calls.revoke_key(key_id))

    def set_secret(self, name: str, value: str, *, tenant: str | None = None) -> dict[str, Any]:
        return self._do(calls.set_secret(name, value, tenant))

    def list_secrets(self, *, tenant: str | None = None) -> SecretList:
        """Names, times and the functions using each; values never come back."""
        return self._do(calls.list_secrets(tenant))

    def delete_secret(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        return self._do(calls.delete_secret(name, tenant))

    def usage(self, *, tenant: str | None = None, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """Usage and cost by day (since/until: YYYY-MM-DD); TENANT: another tenant's (admin)."""
        return self._do(calls.usage(tenant, since, until))

    def audit(self, *, tenant: str | None = None, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return self._do(calls.audit(tenant, after, limit))

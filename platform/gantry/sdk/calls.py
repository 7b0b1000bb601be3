"""Every SDK operation as data: the HTTP request it makes and how its JSON answer becomes the
return value.  Client and AsyncClient only carry these out, so the two cannot drift apart."""
from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from .types import Mode, Priority

# the request headers of gantry.gateway.async_api / invoke (docs/async.md)
IDEMPOTENCY_KEY = "Idempotency-Key"
PRIORITY = "X-Gantry-Priority"
CALLBACK_URL = "X-Callback-Url"
TIMEOUT = "X-Gantry-Timeout"
MAX_WAIT = 60.0          # the most one GET /v1/invocations/ID?wait= holds (async_api.MAX_WAIT)
LOG_PAGE = 1000          # entries per logs request (admin.MAX_LOG_ENTRIES)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    parse: Callable[[Any], Any] = field(default=lambda data: data)

    def body(self) -> bytes | None:
        return None if self.json is None else json.dumps(self.json).encode()


def seg(value: str) -> str:
    """One path segment (a name, an id), quoted."""
    return urllib.parse.quote(str(value), safe="")


def query(path: str, **params: Any) -> str:
    """PATH with the params that are not None as its query string."""
    given = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items() if v is not None}
    return path + ("?" + urllib.parse.urlencode(given) if given else "")


def _key(name: str) -> Callable[[Any], Any]:
    return lambda data: data[name]


# --- functions -------------------------------------------------------------------------------

def deploy_image(spec: dict[str, Any], image: str, tenant: str | None) -> Call:
    return Call("POST", query("/v1/functions", tenant=tenant), {"spec": spec, "image": image})


def list_functions(tenant: str | None) -> Call:
    return Call("GET", query("/v1/functions", tenant=tenant), parse=_key("functions"))


def get_function(name: str) -> Call:
    return Call("GET", f"/v1/functions/{seg(name)}")


def delete_function(name: str) -> Call:
    return Call("DELETE", f"/v1/functions/{seg(name)}")


def scale(name: str, min_instances: int) -> Call:
    return Call("POST", f"/v1/functions/{seg(name)}/scale", {"min_instances": min_instances})


def configure_scaling(name: str, fields: dict[str, Any]) -> Call:
    """PATCH the [scaling] fields given (None: leave as it is)."""
    return Call("PATCH", f"/v1/functions/{seg(name)}/scaling", {k: v for k, v in fields.items() if v is not None})


def warm(name: str, instances: int, for_: str | float) -> Call:
    return Call("POST", f"/v1/functions/{seg(name)}/warm", {"instances": instances, "for": for_})


def decisions(name: str, limit: int | None) -> Call:
    return Call("GET", query(f"/v1/functions/{seg(name)}/decisions", limit=limit), parse=_key("decisions"))


def metrics(name: str | None, tenant: str | None, range_: str | None, step: str | None) -> Call:
    path = f"/v1/tenants/{seg(tenant)}/metrics" if tenant is not None else f"/v1/functions/{seg(name)}/metrics"
    return Call("GET", query(path, range=range_, step=step))


def since_text(since: str | float | datetime | timedelta | None) -> str | None:
    """A since filter as the API takes it: a duration or time string as given, a timedelta as
    seconds back, a datetime as ISO 8601 (naive: UTC), a number as epoch seconds."""
    if since is None or isinstance(since, str):
        return since
    if isinstance(since, timedelta):
        return f"{since.total_seconds():.3f}s"
    if isinstance(since, datetime):
        return (since if since.tzinfo else since.replace(tzinfo=timezone.utc)).isoformat()
    return f"{float(since):.3f}"


def logs_page(name: str, *, after: str | None, since: str | None, instance: str | None, level: str | None,
              tail: int | None) -> Call:
    return Call("GET", query(f"/v1/functions/{seg(name)}/logs", after=after, since=since, instance=instance,
                             level=level, tail=tail, limit=None if tail else LOG_PAGE))


def nodes() -> Call:
    return Call("GET", "/v1/nodes", parse=_key("nodes"))


def health() -> Call:
    return Call("GET", "/healthz")


# --- invoke ----------------------------------------------------------------------------------

def invoke_request(name: str, payload: Any, *, mode: Mode, content_type: str | None, idempotency_key: str | None,
                   priority: Priority | None, callback_url: str | None,
                   timeout: float | None) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of an invocation: bytes go as they are (application/octet-stream
    unless CONTENT_TYPE says), anything else as JSON."""
    if mode not in ("sync", "async"):
        raise ValueError(f"mode: expected 'sync' or 'async', got {mode!r}")
    if mode == "sync" and (priority or callback_url):
        raise ValueError("priority and callback_url need mode='async' (a sync invoke runs at once)")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        body, ctype = bytes(payload), content_type or "application/octet-stream"
    else:
        body, ctype = json.dumps(payload).encode(), content_type or "application/json"
    headers = {"Content-Type": ctype}
    for header, value in ((IDEMPOTENCY_KEY, idempotency_key), (PRIORITY, priority), (CALLBACK_URL, callback_url),
                          (TIMEOUT, None if timeout is None else f"{timeout:g}")):
        if value:
            headers[header] = value
    return f"/v1/invoke/{seg(name)}" + ("/async" if mode == "async" else ""), body, headers


def get_invocation(inv_id: str, wait: float | None = None) -> Call:
    return Call("GET", query(f"/v1/invocations/{seg(inv_id)}", wait=None if wait is None else f"{wait:.3f}"))


def invocation_result_path(inv_id: str) -> str:
    return f"/v1/invocations/{seg(inv_id)}/result"


def cancel(inv_id: str) -> Call:
    return Call("DELETE", f"/v1/invocations/{seg(inv_id)}")


def dead_letters_page(function: str | None, tenant: str | None, after: str | None, limit: int) -> Call:
    return Call("GET", query("/v1/dlq", function=function, tenant=tenant, after=after, limit=limit))


def get_dead_letter(inv_id: str) -> Call:
    return Call("GET", f"/v1/dlq/{seg(inv_id)}")


def replay(inv_id: str) -> Call:
    return Call("POST", f"/v1/dlq/{seg(inv_id)}/replay")


def purge(inv_id: str) -> Call:
    return Call("DELETE", f"/v1/dlq/{seg(inv_id)}")


def schedules(tenant: str | None, function: str | None) -> Call:
    return Call("GET", query("/v1/schedules", tenant=tenant, function=function), parse=_key("schedules"))


# --- tenants, keys, secrets, usage -----------------------------------------------------------

def whoami() -> Call:
    return Call("GET", "/v1/whoami")


def create_tenant(tenant_id: str, fields: dict[str, Any]) -> Call:
    return Call("POST", "/v1/tenants", {"id": tenant_id, **fields})


def list_tenants() -> Call:
    return Call("GET", "/v1/tenants", parse=_key("tenants"))


def get_tenant(tenant_id: str) -> Call:
    return Call("GET", f"/v1/tenants/{seg(tenant_id)}")


def update_tenant(tenant_id: str, fields: dict[str, Any]) -> Call:
    return Call("PATCH", f"/v1/tenants/{seg(tenant_id)}", fields)


def delete_tenant(tenant_id: str) -> Call:
    return Call("DELETE", f"/v1/tenants/{seg(tenant_id)}")


def create_key(tenant: str | None, fields: dict[str, Any]) -> Call:
    return Call("POST", query("/v1/keys", tenant=tenant), {k: v for k, v in fields.items() if v is not None})


def list_keys(tenant: str | None) -> Call:
    return Call("GET", query("/v1/keys", tenant=tenant), parse=_key("keys"))


def revoke_key(key_id: str) -> Call:
    return Call("DELETE", f"/v1/keys/{seg(key_id)}")


def set_secret(name: str, value: str, tenant: str | None) -> Call:
    return Call("PUT", query(f"/v1/secrets/{seg(name)}", tenant=tenant), {"value": value})


def list_secrets(tenant: str | None) -> Call:
    return Call("GET", query("/v1/secrets", tenant=tenant))


def delete_secret(name: str, tenant: str | None) -> Call:
    return Call("DELETE", query(f"/v1/secrets/{seg(name)}", tenant=tenant))


def usage(tenant: str | None, since: str | None, until: str | None) -> Call:
    path = f"/v1/tenants/{seg(tenant)}/usage" if tenant else "/v1/usage"
    return Call("GET", query(path, since=since, until=until))


def audit(tenant: str | None, after: str | None, limit: int | None) -> Call:
    return Call("GET", query("/v1/audit", tenant=tenant, after=after, limit=limit))


def callback_secret() -> Call:
    return Call("GET", "/v1/callbacks/secret")


class LogPager:
    """The requests of a log read or follow, and what each answer means: the first asks with
    SINCE and TAIL, the next ones after the cursor; ``feed`` gives the page's entries and
    whether to ask again at once ("now": more are waiting), after a pause ("poll") or "stop"."""

    def __init__(self, name: str, since: Any, instance: str | None, level: str | None, tail: int | None,
                 follow: bool) -> None:
        self.name, self.instance, self.level, self.follow = name, instance, level, follow
        self.since, self.tail, self.after = since_text(since), tail, None

    def call(self) -> Call:
        first = self.after is None
        return logs_page(self.name, after=self.after, since=self.since if first else None, instance=self.instance,
                         level=self.level, tail=self.tail if first else None)

    def feed(self, page: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
        self.tail = None
        self.after = page["cursor"] or self.after
        return page["entries"], ("now" if page["more"] else "poll" if self.follow else "stop")

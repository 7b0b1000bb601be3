"""The records the SDK returns.  API records are TypedDicts: the JSON the API answers, as it
is (docs/api.md describes every field; keys beyond those listed may appear).  What the SDK
composes itself (an invocation's answer, a log entry, a deployment) are dataclasses."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, TypedDict

from .. import logview

Mode = Literal["sync", "async"]
Priority = Literal["high", "normal", "low"]


class FunctionSummary(TypedDict, total=False):
    """GET /v1/functions (each) and GET /v1/functions/NAME (with ``spec``, ``active_spec``, ``instances``)."""
    name: str
    tenant: str
    latest: int
    active: int
    image: str
    min_override: int | None
    ready: int
    total: int
    states: dict[str, int]
    updated: float
    pending_reason: str | None
    start_failed: dict[str, Any] | None
    error: str | None
    spec: dict[str, Any]
    active_spec: dict[str, Any]
    instances: list[InstanceInfo]


class ScalingChange(TypedDict):
    """PATCH /v1/functions/NAME/scaling: the version holding the policy now (a new one, or the
    latest when ``changed`` is false), the active version, and the whole [scaling] section."""
    name: str
    version: int
    active: int
    changed: bool
    scaling: dict[str, Any]


class InstanceInfo(TypedDict):
    id: str
    version: int
    node: str
    state: str
    address: str | None
    reason: str | None
    created: float


class Node(TypedDict, total=False):
    id: str
    host: str
    gpus: int
    started: float
    tenant: str | None
    capacity: dict[str, int]
    allocatable: dict[str, int]
    allocated: dict[str, int]
    used: dict[str, int]
    instances: int
    states: dict[str, int]
    gpu_devices: list[dict[str, Any]]    # uuid, name, memory, free, util, mig, procs, leased
    cpu_work: bool


class Submission(TypedDict):
    """The 202 of an async invoke."""
    id: str
    state: str
    status_url: str
    idempotent_replay: bool


class Invocation(TypedDict, total=False):
    """An async invocation (and a dead letter): docs/async.md, "The invocation record"."""
    id: str
    function: str
    state: str            # queued, running, retrying, succeeded, failed, dead, cancelled, expired
    attempts: int
    max_attempts: int
    priority: str
    source: str
    schedule: str
    created: float
    started: float | None
    finished: float | None
    next_attempt_at: float
    dead_at: float
    status: int
    error: dict[str, str] | None
    result: Any
    result_type: str
    result_encoding: str
    idempotency_key: str
    callback: dict[str, Any]


class Cancelled(TypedDict):
    id: str
    state: str
    was: str


class Tenant(TypedDict, total=False):
    id: str
    name: str
    isolation: str
    quotas: dict[str, Any]
    features: list[str]
    created: float


class ApiKey(TypedDict, total=False):
    """A key as listed; ``key`` (the secret itself) only in create_key's answer."""
    id: str
    key: str
    tenant: str
    scope: str
    functions: list[str] | None
    note: str
    created: float
    expires: float | None


class Secret(TypedDict):
    name: str
    updated: float
    functions: list[str]


class SecretList(TypedDict):
    tenant: str
    secrets: list[Secret]


class Whoami(TypedDict):
    tenant: str
    scope: str
    key_id: str
    functions: list[str] | None


SETTLED = frozenset(("succeeded", "failed", "dead", "cancelled", "expired"))


@dataclass(frozen=True)
class InvokeResult:
    """A sync invocation's answer (or a settled async one's result): the function's status,
    headers and body bytes."""
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")

    @property
    def invocation_id(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "x-gantry-invocation-id"), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Deployment:
    """What deploy() did: the version it made, the one taking traffic, the image and where to invoke."""
    name: str
    tenant: str
    version: int
    active: int
    image: str
    invoke_url: str


@dataclass(frozen=True)
class LogEntry:
    """One line of a function's log stream.  ``fields``: the line's JSON object (None for plain
    text); ``level`` and ``message`` come from it (plain text: info and the line)."""
    id: str
    instance: str
    line: str
    fields: dict[str, Any] | None

    @classmethod
    def from_api(cls, raw: Mapping[str, str]) -> "LogEntry":
        line = raw.get("line", "")
        return cls(raw["id"], raw.get("instance", ""), line, logview.structured(line))

    @property
    def level(self) -> str:
        return logview.entry_level(self.fields)

    @property
    def message(self) -> str:
        return str(self.fields.get("msg", "")) if self.fields is not None else self.line

    @property
    def time(self) -> datetime:
        """When the line reached the platform's log stream (UTC)."""
        return datetime.fromtimestamp(logview.stream_ms(self.id) / 1000, timezone.utc)

    def format(self) -> str:
        """The human-readable line `gantry logs` prints."""
        return logview.format_entry({"id": self.id, "instance": self.instance, "line": self.line})

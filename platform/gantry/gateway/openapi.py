"""The gateway's HTTP API as an OpenAPI 3.1 document, written by hand as data.

This is the reference: ``GET /v1/openapi.json`` serves it (no key: it describes the API,
it discloses nothing deployed), ``docs/api.md`` is rendered from it (``render_markdown``;
``scripts/render_api.py`` writes the file and a test checks that the committed one is
current), and tests check that every route the app serves is here and the other way round,
and fuzz every operation against a real gateway (schemathesis), checking each answer
against the schemas below.

Bounds come from where they are enforced (``manifest``'s MAX_* constants, ``admin``'s
limits, ``coord_api``'s, ``state``'s instance states), so the document cannot drift from the validation;
error codes per status are in ``ERRORS``, the one table the responses are built from.
"""
from __future__ import annotations

import json
from typing import Any

from gantry_runtime import wire
from gantry_runtime.coord import CoordCode
from gantry_runtime.wire import ErrorCode

from .. import keys, state
from ..manifest import (MIN_UTILIZATION, MAX_RETRIES, MAX_SCHEDULES, PRIORITIES, SCHEDULE_NAME_RE, MAX_BODY, MAX_CONCURRENCY, MAX_CPU, MAX_DURATION, MAX_GPU, MAX_INSTANCES, MAX_MEMORY,
                        MAX_GPU_MEMORY, MAX_GPU_TYPES, GPU_TYPE_RE, MIN_MEMORY, NAME_RE, QUALIFIED_RE, RUNTIMES, SECRET_NAME_RE, TENANT_RE,
                        DTYPES, MAX_ENGINE_ARGS, MAX_MODEL_LEN, MODEL_SOURCES)
from ..invocations import signing
from ..quantities import format_size
from ..tenants.apikeys import KEY_RE, MAX_KEY_FUNCTIONS, MAX_NOTE
from ..tenants.model import (FEATURE_RE, MAX_FEATURES, MAX_TENANT_NAME, QUOTA_FIELDS, TENANT_ID_RE, Isolation,
                             Scope)
from ..tenants.secretbox import MAX_SECRETS, MAX_VALUE_BYTES
from ..usage.model import COUNTERS, RETENTION_DAYS, WHOLE
from .admin import MAX_JSON_DEPTH, MAX_LOG_ENTRIES
from .registry import LOG_SCAN_MAX
from .audit import MAX_AUDIT_ENTRIES
from .coord_api import (MAX_DELIVERIES, MAX_EVENTS, MAX_LIST, MAX_NAME, MAX_QUEUE_NAME, MAX_TTL, MAX_VISIBILITY,
                        MAX_WAIT, MAX_WEIGHT)

PATH = "/v1/openapi.json"
API_VERSION = "1"

_Schema = dict[str, Any]


def _ref(name: str) -> _Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, _Schema], required: list[str] | None = None, *, closed: bool = True,
         description: str | None = None) -> _Schema:
    out: _Schema = {"type": "object", "properties": properties,
                    "required": list(properties) if required is None else required}
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def _nullable(schema: _Schema) -> _Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_NAME = {"type": "string", "pattern": NAME_RE.pattern,
         "description": "lower-case letters, digits and '-', starting with a letter, at most 63"}
# A function as its caller names it: bare for the caller's own tenant; the platform admin
# names another tenant's as TENANT.NAME (docs/tenants.md).
_QNAME = {"type": "string", "pattern": QUALIFIED_RE.pattern,
          "description": "the function's name; the platform admin names another tenant's as TENANT.NAME"}
_TENANT_ID = {"type": "string", "pattern": TENANT_RE.pattern, "description": "a tenant id"}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
           "propertyNames": {"enum": [s.value for s in state.InstanceState]},
           "description": "instances by state"}


def _size(most: int, what: str, least: int = 0) -> _Schema:
    return {"anyOf": [{"type": "integer", "minimum": least, "maximum": most},
                      {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KMGTkmgt]i?|B)?\s*$"}],
            "description": f"{what}: bytes, or a size such as \"512Mi\" or \"2G\" (at most {format_size(most)})"}


def _duration(what: str) -> _Schema:
    return {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_DURATION},
                      {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"}],
            "description": f"{what}: seconds, or a duration such as \"30s\", \"500ms\" or \"5m\" "
                           f"(at most {MAX_DURATION / 86400:g} days)"}


def _spec(written: bool) -> _Schema:
    """The function spec: as a manifest is WRITTEN (gantry.toml as JSON: sizes and durations
    may be strings; everything but name and handler has a default), or as stored and
    answered (numbers, every field present)."""
    def num(kind: str, lo: float, hi: float, what: str) -> _Schema:
        return {"type": kind, "minimum": lo, "maximum": hi, "description": what}

    size = _size if written else (lambda most, what, least=0: {"type": "integer", "minimum": least, "maximum": most,
                                                                "description": f"{what}: bytes"})
    duration = _duration if written else (lambda what: {**num("number", 0, MAX_DURATION, f"{what}: seconds")})
    env_value = ({"type": ["string", "number", "boolean"]} if written else {"type": "string"})
    gpu_types = {"type": "array", "maxItems": MAX_GPU_TYPES, "items": {"type": "string", "pattern": GPU_TYPE_RE.pattern}}
    sections = {
        "resources": {
            "cpu": num("number", 0.01, MAX_CPU, "cores: the container's CPU quota (default 0.5)"),
            "cpu_request": num("number", 0, MAX_CPU, "cores placement reserves (0, the default: the same as cpu)"),
            "memory": size(MAX_MEMORY, f"memory limit, at least {format_size(MIN_MEMORY)} (default 512Mi)",
                           MIN_MEMORY),
            "gpu": num("integer", 0, MAX_GPU, "whole GPUs (default 0)"),
            "gpu_memory": size(MAX_GPU_MEMORY, "a share of ONE GPU's memory, never with gpu (default 0: none; "
                                               "docs/gpus.md)"),
            "gpu_type": {**({"anyOf": [{"type": "string", "pattern": GPU_TYPE_RE.pattern}, gpu_types]}
                            if written else gpu_types),
                         "description": "GPU names placement prefers, best first, each matched as a "
                                        "case-insensitive part of the GPU's name (default: any GPU)"},
        },
        "scaling": {
            "min_instances": num("integer", 0, MAX_INSTANCES, "instances kept ready (default 0: scale to zero)"),
            "max_instances": num("integer", 1, MAX_INSTANCES, "default 10"),
            "concurrency": num("integer", 1, MAX_CONCURRENCY, "requests in flight per instance (default 4)"),
            "idle_timeout": duration("how long demand is remembered before scaling down (default 60s)"),
            "keep_paused": duration("how long a scaled-down instance stays paused (default 5m; 0: stopped)"),
            "target_utilization": num("number", MIN_UTILIZATION, 1, "the share of concurrency each instance is "
                                      "sized to run: instances = ceil(in flight / (concurrency x this)) "
                                      "(default 1)"),
            "scale_up_cooldown": duration("no scale-up within this of the last scale-up (default 0: none)"),
            "scale_down_cooldown": duration("no scale-down within this of the last change (default 0: none)"),
        },
        "limits": {
            "timeout": duration("per invocation, above zero (default 30s)"),
            "max_body": size(MAX_BODY, "request body limit (default 0: the gateway's GANTRY_MAX_BODY)"),
        },
        "async": {
            "max_retries": num("integer", 0, MAX_RETRIES, "retries of an async invocation after its first "
                                                          "attempt fails with a 5xx, a timeout or a crash (default 2)"),
            "backoff": _obj({"initial": duration("before the first retry (default 1s)"),
                             "max": duration("each retry waits twice the one before, up to this (default 1m)")},
                            [] if written else None),
            "max_event_age": duration("how long an invocation may wait to run before it expires (default 6h)"),
        },
    }
    props: dict[str, _Schema] = {
        "name": _NAME,
        "handler": {"type": "string", "pattern": f"^$|{wire.HANDLER_RE.pattern}",
                    "description": wire.HANDLER_EXPECTED + "; required, except for runtime vllm, which has none "
                                   "(empty)"},
        "runtime": {"enum": list(RUNTIMES), "description": "default python3.11; vllm: the engine serves [model] "
                                                         "(docs/vllm.md)"},
        **{section: _obj(fields, [] if written else None) for section, fields in sections.items()},
        "env": {"type": "object", "additionalProperties": env_value,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "not": {"pattern": "^GANTRY_"}},
                "description": "environment variables of the function (names starting with GANTRY_ are reserved)"},
        "secrets": {"type": "object", "additionalProperties": {"type": "string", "pattern": SECRET_NAME_RE.pattern},
                    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "not": {"pattern": "^GANTRY_"}},
                    "description": "environment variable -> the name of one of the tenant's secrets, delivered "
                                   "at start (never stored in the spec or the image); a variable is in env or "
                                   "here, not both"},
    }
    schedule = _obj({
        "name": {"type": "string", "pattern": SCHEDULE_NAME_RE.pattern},
        "cron": {"type": "string", "description": "a cron expression (minute hour day month weekday)"},
        "timezone": {"type": "string", "description": "an IANA time zone (default UTC)"},
        "payload": {"description": "the event each tick sends (JSON; absent: an empty body)"},
        "priority": {"enum": list(PRIORITIES), "description": "default normal"}},
        ["name", "cron"] if written else ["name", "cron", "timezone", "priority"])
    props["schedules"] = {"type": "array", "items": schedule, "maxItems": MAX_SCHEDULES,
                          "description": "cron schedules, each tick one async invocation (docs/async.md)"}
    props["model"] = {**_obj({
        "path": {"type": "string", "description": "the model folder: in the function directory, or (source node) "
                                                  "under the node's GANTRY_MODELS_DIR"},
        "source": {"enum": list(MODEL_SOURCES), "description": "default function"},
        "served_name": {"type": "string", "description": "the model's name in the API (default: the function's)"},
        "max_model_len": num("integer", 0, MAX_MODEL_LEN, "tokens (default 0: the model's own)"),
        "dtype": {"enum": list(DTYPES), "description": "default auto"},
        "gpu_memory_utilization": num("number", 0, 1, "the engine's share of its GPU (0, the default: derived "
                                                      "from resources.gpu_memory, else vLLM's own)"),
        "engine_args": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ENGINE_ARGS,
                        "description": "more vLLM arguments; --port, --host, --api-key, --model and "
                                       "--served-model-name are the platform's"}},
        ["path"] if written else None), "description": "runtime vllm only, and required there (docs/vllm.md)"}
    props["tenant"] = {**_TENANT_ID, "description": "the owner, set from the deploying key" + (
        " (may be sent, and must then be that tenant)" if written else "")}
    # a stored spec has every field but model, which only a vllm function's has
    return _obj(props, ["name"] if written else [k for k in props if k != "model"])


SCHEMAS: dict[str, _Schema] = {
    "Error": _obj({"error": _obj({
        "code": {"type": "string"}, "message": {"type": "string"},
        "resource": {"type": "string", "description": "quota_exceeded, and a tenant's rate_limited: the quota's "
                                                      "resource (functions, instances, cpu, memory, gpus, rpm, "
                                                      "concurrency)"},
        "current": {"type": "number", "description": "quota_exceeded: the tenant's use now (cpu in cores, "
                                                     "memory in bytes)"},
        "limit": {"type": "number", "description": "quota_exceeded, a tenant's rate_limited: the quota"}},
        required=["code", "message"])},
                  description="Every error the gateway answers, and every error of the runtime it passes on"),
    "SpecInput": _spec(written=True),
    "Spec": _spec(written=False),
    "DeployRequest": _obj({"spec": _ref("SpecInput"),
                           "image": {"type": "string", "minLength": 1, "pattern": r"\S",
                                     "description": "the image reference `gantry build` made"}}),
    "Deployed": _obj({"name": _QNAME, "tenant": _TENANT_ID, "version": {"type": "integer", "minimum": 1},
                      "active": {"type": "integer", "minimum": 1,
                                 "description": "the version taking traffic (the new one once it is ready)"}}),
    "FunctionSummary": _obj({
        "name": _QNAME, "tenant": _TENANT_ID,
        "latest": _nullable({"type": "integer"}), "active": _nullable({"type": "integer"}),
        "image": _nullable({"type": "string"}),
        "min_override": _nullable({"type": "integer", "minimum": 0}),
        "ready": {"type": "integer", "minimum": 0}, "total": {"type": "integer", "minimum": 0},
        "states": _COUNTS, "updated": _nullable({"type": "number"}),
        "pending_reason": _nullable({"type": "string"}),
        "start_failed": _nullable(_obj({"version": {"type": "integer", "minimum": 1},
                                        "cause": {"type": "string"}},
                                       description="the version's last instance that never became ready, "
                                                   "and why (cleared once one is ready)")),
        "scale_target": _nullable({"type": "integer", "minimum": 0,
                                   "description": "the scheduler's last scaling decision (null: none yet)"}),
        "warm": _nullable(_obj({"instances": {"type": "integer", "minimum": 1}, "until": {"type": "number"}},
                               description="a `gantry warm` hold in force: at least `instances` until "
                                           "`until` (unix seconds)")),
        "error": _nullable({"type": "string", "description": "why the stored record cannot be read"}),
    }),
    "ScalingDecision": _obj({
        "time": {"type": "number", "description": "unix seconds"},
        "from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0},
        "reason": {"type": "string", "description": "such as \"scale up 1->4: 10 in flight / (4 x 0.8)\" "
                                                    "or \"held by scale_down_cooldown (12s left): ...\""},
        "held": {"enum": ["scale_up_cooldown", "scale_down_cooldown"],
                 "description": "the cooldown that held the change back (`from` == `to`)"}},
        ["time", "from", "to", "reason"]),
    "Instance": _obj({
        "id": {"type": "string"}, "version": {"type": "integer"}, "node": {"type": "string"},
        "state": {"enum": [s.value for s in state.InstanceState]},
        "address": _nullable({"type": "string"}), "reason": _nullable({"type": "string"}),
        "created": {"type": "number"},
    }),
    "LogEntry": _obj({"id": {"type": "string", "description": "the cursor of this entry"},
                      "instance": {"type": "string"}, "line": {"type": "string"}}, ["id"], closed=False),
    "Node": _obj({
        "id": {"type": "string"}, "host": {"type": "string"}, "gpus": {"type": "integer", "minimum": 0},
        "started": {"type": "number"},
        "tenant": _nullable({"type": "string", "description": "the tenant the node is labelled for "
                                                               "(GANTRY_NODE_TENANT): it runs only that tenant's instances"}),
        **{part: _obj({"cpu": {"type": "integer", "description": "millicores"},
                       "memory": {"type": "integer", "description": "bytes"}}, description=what)
           for part, what in (("capacity", "what the node has"),
                              ("allocatable", "what placement may reserve (CPU overcommitted)"),
                              ("allocated", "reserved by the instances placed there"),
                              ("used", "really in use now (the whole node)"))},
        "instances": {"type": "integer", "minimum": 0}, "states": _COUNTS,
        "gpu_devices": {"type": "array", "description": "the node's GPUs as its worker read them (NVML), "
                                                         "refreshed at each heartbeat",
                        "items": _obj({
                            "uuid": {"type": "string"}, "name": {"type": "string"},
                            "memory": {"type": "integer", "description": "bytes in total"},
                            "free": {"type": "integer", "description": "bytes free at the last reading"},
                            "util": {"type": "integer", "description": "% busy (-1: not supported)"},
                            "mig": {"type": "integer", "description": "1: MIG mode on (never leased)"},
                            "procs": {"type": "array", "items": {"type": "integer"},
                                      "description": "host PIDs of the compute processes on it"},
                            "leased": {"type": "integer", "description": "bytes leased to instances "
                                                                         "(a whole GPU: all of it)"}})},
        "cpu_work": {"type": "boolean", "description": "whether it takes CPU-only instances "
                                                       "(a GPU node only with GANTRY_GPU_NODE_CPU_WORK=1)"},
    }),
}
_QUOTAS = _obj({name: {"type": "number" if name == "cpu" else "integer", "minimum": 0,
                       "description": f"{unit}; absent: no limit"}
                for name, unit in QUOTA_FIELDS.items()}, [], description="resource -> limit")
_TENANT_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": MAX_TENANT_NAME, "description": "a display name"},
    "isolation": {"enum": [i.value for i in Isolation], "description": "default `container` for a new tenant"},
    "features": {"type": "array", "items": {"type": "string", "pattern": FEATURE_RE.pattern}, "maxItems": MAX_FEATURES},
}
SCHEMAS["Tenant"] = _obj({"id": _TENANT_ID, **_TENANT_FIELDS, "quotas": _QUOTAS, "created": {"type": "number"},
                          "functions": {"type": "integer", "minimum": 0, "description": "deployed functions"},
                          "usage": _obj({name: {"type": "number", "minimum": 0} for name in QUOTA_FIELDS
                                         if name != "rpm"}, [], closed=False,
                                        description="what counts against each quota now (cpu in cores)")})
_QUOTAS_INPUT = _obj({name: _nullable({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]}
                                      if name == "memory" else {"type": "number" if name == "cpu" else "integer",
                                                                "minimum": 0})
                      for name in QUOTA_FIELDS}, [], description="resource -> limit (memory may be a size such as "
                                                                 "\"8Gi\"); null removes a limit")
SCHEMAS["TenantInput"] = _obj({"id": _TENANT_ID, **_TENANT_FIELDS, "quotas": _QUOTAS_INPUT}, ["id"])
SCHEMAS["TenantUpdate"] = _obj({**_TENANT_FIELDS, "quotas": _QUOTAS_INPUT}, [])
_SCOPE = {"enum": [s.value for s in Scope], "description": "admin (platform-wide), tenant-admin, deploy or invoke"}
SCHEMAS["Key"] = _obj({
    "id": {"type": "string", "pattern": "^[0-9a-f]{12}$"}, "tenant": _TENANT_ID, "scope": _SCOPE,
    "functions": _nullable({"type": "array", "items": _NAME}), "created": {"type": "number"},
    "expires": _nullable({"type": "number"}), "revoked": _nullable({"type": "number"}),
    "created_by": {"type": "string"}, "note": _nullable({"type": "string"}),
    "prefix": {"type": "string", "description": "how the key starts (the key itself is never shown again)"},
    "live": {"type": "boolean"}}, ["id", "tenant", "scope"])
SCHEMAS["KeyInput"] = _obj({
    "scope": {**_SCOPE, "description": "default invoke; at most the caller's own"},
    "tenant": {**_TENANT_ID, "description": "the platform admin's choice; a tenant's key makes keys of its own"},
    "functions": _nullable({"type": "array", "items": _NAME, "maxItems": MAX_KEY_FUNCTIONS,
                            "description": "limit the key to these functions"}),
    "ttl": _nullable({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
                      "description": "lifetime: seconds or a duration such as \"30d\"; absent: no expiry"}),
    "note": {"type": "string", "maxLength": MAX_NOTE}}, [])
SCHEMAS["Function"] = _obj({**SCHEMAS["FunctionSummary"]["properties"],   # the summary, and:
                           "spec": _nullable(_ref("Spec")), "active_spec": _nullable(_ref("Spec")),
                           "instances": {"type": "array", "items": _ref("Instance")}})


# -- the coordination API (gateway/coord_api.py; docs/coordination.md) ------------------------
# Request bodies are open (unknown fields are ignored); an optional field sent as null takes
# its default.  Names are checked with str.isprintable: the patterns below admit a superset
# (no control characters), so a name they admit may still be 400.

_PRINTABLE = "\\u0000-\\u001f\\u007f-\\u009f"


def _coord_name(what: str, most: int = MAX_NAME) -> _Schema:
    return {"type": "string", "minLength": 1, "maxLength": most, "pattern": f"^[^{_PRINTABLE}]+$",
            "description": f"{what}: 1 to {most} printable characters, in the caller's namespace"}


def _opt(schema: _Schema, what: str) -> _Schema:
    return {**_nullable(schema), "description": what}


def _seconds(lo: float, hi: float, what: str) -> _Schema:
    return _opt({"type": "number", "minimum": lo, "maximum": hi}, f"{what} (seconds, {lo:g} to {hi:g})")


_TOKEN = {"type": "integer", "minimum": 1, "maximum": 2**62}
_REVISION = {"type": "integer", "minimum": 0, "description": "the namespace's revision"}
_ANY = {"description": "any JSON value"}
_FENCE = _opt(_obj({"lock": _coord_name("the lock"), "token": {**_TOKEN, "description": "the grant's token"}},
                   ["lock"], closed=False),
              "write only while this lock is held with this token, else 409 `fence_stale`")
_EXPECT = _opt({"type": "integer", "minimum": 0, "maximum": 2**62},
               "compare-and-swap: the key's current revision (0: it must not exist), else 409 `version_mismatch`")
_LOCK_REF = {"name": _coord_name("the lock"), "holder": _coord_name("who holds or waits (one per caller)")}
_GRANT_TOKEN = _opt(_TOKEN, "the grant's fencing token (absent or null: 0, which no grant has)")
_LEASE = _seconds(0.05, MAX_TTL, "the lease (default 10)")
_QUEUE = _coord_name("the queue", MAX_QUEUE_NAME)
_RECEIPT = {"name": _QUEUE, "id": {**_TOKEN, "description": "the item's id"},
            "delivery": {**_TOKEN, "description": "the delivery's number, from get"}}
_SERVICE = {"name": _coord_name("the service"), "instance": _coord_name("the instance")}
_REG_TTL = _seconds(0.1, MAX_TTL, "the registration lives this long unless renewed (default 10)")

SCHEMAS.update({
    "SecretSet": _obj({"name": {"type": "string"}, "tenant": {"type": "string"},
                       "created": {"type": "boolean", "description": "true: new; false: replaced"}},
                      ["name", "tenant", "created"]),
    "SecretList": _obj({"tenant": {"type": "string"}, "secrets": {"type": "array", "items": _obj({
        "name": {"type": "string"}, "created": {"type": "number"}, "updated": {"type": "number"},
        "functions": {"type": "array", "items": {"type": "string"},
                      "description": "the tenant's functions whose latest or active version names it"}},
        ["name", "created", "updated", "functions"])}}, ["tenant", "secrets"]),
})
SCHEMAS.update({
    "LockAcquireRequest": _obj({**_LOCK_REF, "ttl": _LEASE,
                         "wait": _seconds(0, MAX_WAIT, "how long to wait in line (default 0: try once)")},
                        ["name", "holder"], closed=False),
    "LockGrant": _obj({"acquired": {"type": "boolean"},
                       "token": {"type": "integer", "minimum": 0,
                                 "description": "the fencing token (0 when not acquired)"},
                       "holder": {"type": "string", "description": "when acquired"}}, ["acquired", "token"]),
    "LockRenewRequest": _obj({**_LOCK_REF, "token": _GRANT_TOKEN, "ttl": _LEASE}, ["name", "holder"], closed=False),
    "LockReleaseRequest": _obj({**_LOCK_REF, "token": _GRANT_TOKEN}, ["name", "holder"], closed=False),
    "LockHolder": _obj({"held": {"type": "boolean"}, "holder": _nullable({"type": "string"}),
                      "token": {"type": "integer", "minimum": 0},
                      "ttl": {"type": "number", "description": "seconds of the lease left (when held)"}},
                     ["held", "holder", "token"]),
    "StateEntry": _obj({"key": {"type": "string"}, "value": _ANY,
                        "revision": {"type": "integer", "minimum": 0,
                                     "description": "the revision of the key's last change"}},
                       description="A key's value (null once deleted) and revision"),
    "StateSetRequest": _obj({"value": _ANY, "expect_revision": _EXPECT, "fence": _FENCE}, ["value"], closed=False),
    "StateDeleteRequest": _obj({"expect_revision": _EXPECT, "fence": _FENCE}, [], closed=False),
    "StateIncrementRequest": _obj({"delta": _opt({"type": "integer", "minimum": -2**53, "maximum": 2**53}, "default 1"),
                            "expect_revision": _EXPECT, "fence": _FENCE}, [], closed=False),
    "StateItems": _obj({"items": {"type": "array", "items": _ref("StateEntry")}, "revision": _REVISION},
                      description="One consistent read: watch from its revision"),
    "Change": _obj({"revision": {"type": "integer", "minimum": 1}, "key": {"type": "string",
                                                                         "description": "`@lock/NAME` for lock events"},
                    "op": {"enum": ["set", "del", "incr", "grant", "release"]},
                    "value": {"description": "the new value (null for del; the holder for lock events)"},
                    "token": {"type": "integer", "minimum": 0, "description": "lock events: the grant's token"}}),
    "Changes": _obj({"events": {"type": "array", "items": _ref("Change"), "maxItems": MAX_EVENTS},
                     "revision": {**_REVISION, "description": "ask next with `after` this"}}),
    "QueuePutRequest": _obj({"name": _QUEUE, "value": _ANY,
                      "priority": _opt({"type": "integer", "minimum": 0, "maximum": 9},
                                       "0 to 9, higher first (default 0)")}, ["name", "value"], closed=False),
    "QueueGetRequest": _obj({"name": _QUEUE, "timeout": _seconds(0, MAX_WAIT, "how long to wait for an item (default 0)"),
                      "visibility": _seconds(0.01, MAX_VISIBILITY, "the item is delivered again unless acked "
                                                                   "within this (default 30)"),
                      "max_deliveries": _opt({"type": "integer", "minimum": 0, "maximum": MAX_DELIVERIES},
                                             "deliveries before the item moves to NAME.dead (default 5; 0: no "
                                             "limit)")},
                     ["name"], closed=False),
    "Delivery": _obj({"item": _nullable(_obj({"id": {"type": "integer", "minimum": 1}, "value": _ANY,
                                              "delivery": {"type": "integer", "minimum": 1},
                                              "deadline_ms": {"type": "integer",
                                                              "description": "when it is delivered again unless "
                                                                             "acked (epoch ms)"}}))},
                     description="An item, or null when none came within the timeout"),
    "QueueAckRequest": _obj({**_RECEIPT, "fence": _FENCE}, ["name"], closed=False),
    "QueueNackRequest": _obj({**_RECEIPT, "delay": _seconds(0, MAX_VISIBILITY, "deliver it again after this (default 0)")},
                      ["name"], closed=False),
    "ServiceRegisterRequest": _obj({**_SERVICE, "address": _coord_name("where it listens"),
                             "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                             "metadata": _opt({"type": "object"}, "anything the consumers need (default {})"),
                             "weight": _opt({"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT},
                                            "its share of picks (default 1; 0: never picked)"),
                             "ttl": _REG_TTL}, ["name", "instance", "address", "port"], closed=False),
    "ServiceHeartbeatRequest": _obj({**_SERVICE, "ttl": _REG_TTL}, ["name", "instance"], closed=False),
    "ServiceDeregisterRequest": _obj(dict(_SERVICE), closed=False),
    "ServiceInstance": _obj({"id": {"type": "string"}, "address": {"type": "string"},
                             "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                             "metadata": {"type": "object"}, "weight": {"type": "integer", "minimum": 0},
                             "expires_ms": {"type": "integer", "description": "when the registration ends "
                                                                              "unless renewed (epoch ms)"}}),
})

# --- usage and audit (gateway/usage.py, gateway/audit.py; docs/tenants.md) ---------------------
_TENANT = {"type": "string", "pattern": TENANT_ID_RE.pattern, "description": "a tenant id"}
_USAGE_DAY = {"type": "string", "pattern": r"^(\d{4}-\d{2}-\d{2}|\d{1,3}d)?$",
              "description": f"a UTC day YYYY-MM-DD, or a number of days such as 7d (today and the days before; "
                             f"at most {RETENTION_DAYS}d)"}
_MONEY = {"type": "number", "minimum": 0}
SCHEMAS.update({
    "UsageRow": _obj({c: {"type": "integer", "minimum": 0} if c in WHOLE else {"type": "number", "minimum": 0}
                      for c in COUNTERS},
                     description="invocations (admitted calls of a deployed function), errors (of those, answered "
                                 ">= 500), throttles (429 of the rate limit), duration_seconds (gateway wall time), "
                                 "cpu_seconds, memory_gib_seconds and gpu_seconds reserved"),
    "UsageReport": _obj({
        "tenant": _TENANT, "since": {"type": "string", "description": "the first day counted (UTC)"},
        "until": {"type": "string", "description": "the last day counted (UTC)"},
        "functions": {"type": "object", "additionalProperties": _ref("UsageRow"),
                      "description": "per function (its name within the tenant)"},
        "totals": _ref("UsageRow"),
        "cost": _obj({"currency": {"type": "string", "description": "the price table's label (may be empty)"},
                      "prices": _obj({"cpu_second": _MONEY, "memory_gib_second": _MONEY, "gpu_second": _MONEY,
                                      "million_invocations": _MONEY, "currency": {"type": "string"}},
                                     description="the operator's price table (GANTRY_PRICES)"),
                      "period": {**_MONEY, "description": "what the days since..until cost"},
                      "month_to_date": {**_MONEY, "description": "what this UTC month has cost so far"},
                      "monthly_estimate": {**_MONEY, "description": "month to date x seconds in the month / "
                                                                    "seconds elapsed (at least an hour)"}})}),
    "AuditEntry": _obj({"id": {"type": "string", "description": "the cursor of this entry"},
                        "time": {"type": "number", "description": "when (epoch seconds)"},
                        "actor": {"type": "string", "description": "the API key id that acted"},
                        "tenant": {"type": "string"}, "action": {"type": "string",
                                                                 "description": "function.deploy, key.create, ..."},
                        "target": {"type": "string"}, "detail": {"type": "object"}}),
})

# --- schedules (gateway/schedules_api.py; docs/async.md) ----------------------------
_TICK = _nullable({"type": "string", "format": "date-time",
                   "description": "ISO-8601 in the schedule's time zone, with its offset"})
_UNIX = _nullable({"type": "integer", "description": "the same tick in unix seconds"})
SCHEMAS["Schedule"] = _obj({
    "function": _QNAME, "tenant": _TENANT_ID,
    "name": {"type": "string", "description": "the [[schedules]] entry's name"},
    "cron": {"type": "string"}, "timezone": {"type": "string", "description": "an IANA time zone"},
    "priority": {"enum": ["high", "normal", "low"]},
    "next": _TICK, "next_unix": _UNIX,
    "last_fired": {**_TICK, "description": "the last tick fired (null: none yet)"}, "last_fired_unix": _UNIX,
    "last_invocation": _nullable({"type": "string", "description": "the id of that tick's async invocation "
                                                                   "(GET /v1/invocations/{id})"}),
    "missed": {"type": "integer", "minimum": 0,
               "description": "ticks skipped because the platform was down longer than the catch-up window"}})

# (status, code, when): the gateway's errors.  Each operation lists the statuses it may answer;
# its response for a status allows the codes of that status here that apply to it (INVOKE_ONLY
# codes only on invoke).  A 500 `internal` is a bug in the gateway: no operation lists it.
ERRORS: list[tuple[int, str, str]] = [
    (400, ErrorCode.BAD_REQUEST, "a malformed body, query or header (a bad spec names the field); an admin body "
     f"that is not UTF-8 JSON, nests deeper than {MAX_JSON_DEPTH} levels or holds a number that is not finite or "
     "beyond 2**63-1; an invoke body sent as JSON that is not (the runtime's 400, passed on); a request line or "
     "header the HTTP parser rejects"),
    (401, "unauthorized", "no bearer key, or an unknown one, or a function's coordination token whose instance no "
     "longer runs (`WWW-Authenticate: Bearer`)"),
    (403, ErrorCode.FORBIDDEN, "the key's scope does not allow the operation (docs/tenants.md), or it is limited to "
     "other functions; a function's coordination token outside /v1/coord/"),
    (403, "quota_exceeded", "a tenant quota refused it (a new function over `functions`, `min_instances` over "
     "`instances`, an invocation over `concurrency`, or one waiting for an instance its quota keeps from "
     "starting); the error names `resource`, `current` and `limit`"),
    (404, ErrorCode.NOT_FOUND, "no such function, tenant or key (or route): another tenant's is not found either; in "
     "/v1/coord/: no such state key, registration or live service instance"),
    (404, "not_openai_compatible", "an OpenAI-compatible route (`/v1/invoke/{name}/v1/...`) of a function whose "
     "runtime is not `vllm`: it serves `POST /v1/invoke/{name}` only"),
    (409, "conflict", "a tenant id that exists; removing a tenant that still has functions, or the default tenant; "
     "changing the scaling of a function whose stored record cannot be read"),
    (409, CoordCode.FENCE_STALE, "a fenced write or ack whose lock is no longer held with that token: a newer "
     "holder may have written; stop"),
    (409, CoordCode.LOCK_LOST, "a renew of a lease that is gone (expired, or released)"),
    (409, CoordCode.RECEIPT_STALE, "an ack or nack of a delivery that was delivered again or settled since"),
    (409, CoordCode.VERSION_MISMATCH, "a compare-and-swap (`expect_revision`) that lost: read the key again"),
    (409, CoordCode.NOT_AN_INTEGER, "an increment of a value that is not an integer"),
    (410, CoordCode.REVISION_COMPACTED, "a watch from a revision the log no longer reaches back to (or one ahead "
     "of the namespace): read the state again and watch from that read's revision"),
    (405, "method_not_allowed", "a method the path does not serve (`Allow` lists those it does)"),
    (413, ErrorCode.TOO_LARGE, "the body is over the limit, whatever Content-Length said: for invoke the function's "
     "`[limits] max_body`, else the gateway's `GANTRY_MAX_BODY` (the message names which); for admin calls "
     "`GANTRY_MAX_BODY`"),
    (429, "rate_limited", "over the key's rate limit (or the client address's wrong-key limit, or the tenant's "
     "`rpm` quota: the error then has `resource` and `limit`); `Retry-After` in whole seconds, the message gives "
     "the exact wait"),
    (500, ErrorCode.FUNCTION_ERROR, "the handler raised (type and message; never the traceback)"),
    (500, ErrorCode.BAD_RESULT, "the handler returned something the runtime cannot send"),
    (502, "function_crashed", "no instance could be reached, or one answered badly"),
    (502, ErrorCode.FUNCTION_OUTCOME_UNKNOWN, "the instance broke off after the request was sent: the function may "
     "have run once; the gateway did not retry it"),
    (503, "no_capacity", "no instance became free within the cold-start timeout, or every one tried was busy; "
     "`Retry-After`"),
    (503, "unavailable", "the gateway cannot reach Redis (every admin call; an invoke of a function it has not "
     "cached); `Retry-After: 1`"),
    (504, ErrorCode.TIMEOUT, "the function's timeout, or the caller's shorter `X-Gantry-Timeout`, passed"),
    (409, "not_cancellable", "the invocation is running or settled: only a queued or retrying one can be cancelled"),
    (409, "not_settled", "the invocation has not settled yet: no result"),
    (409, "no_result", "the invocation settled without a result (cancelled, expired, or no attempt answered)"),
    (409, "not_deployed", "a dead letter's function is no longer deployed: it cannot be replayed"),
    (409, "cancelled", "the idempotent invocation this key made was cancelled"),
    (422, "idempotency_conflict", "the `Idempotency-Key` was used before with a different body (the first "
     "invocation's id is in `X-Gantry-Invocation-Id`)"),
    (409, "too_many_secrets", f"the tenant holds {MAX_SECRETS} secrets, the most it may"),
    (503, "secrets_unavailable", "this gateway has no secrets master key (`GANTRY_SECRETS_KEY_FILE` or "
     "`GANTRY_SECRETS_KEY`); an operator must set one"),
]
# Codes that apply only to the operations whose ``codes`` name them.
ONLY_WHERE_LISTED = {"not_openai_compatible", "too_many_secrets", "secrets_unavailable", "not_cancellable", "not_settled", "no_result",
                     "not_deployed", "cancelled", "idempotency_conflict"}
INVOKE_ONLY = {ErrorCode.FUNCTION_ERROR, ErrorCode.BAD_RESULT, "function_crashed",
               ErrorCode.FUNCTION_OUTCOME_UNKNOWN, "no_capacity", ErrorCode.TIMEOUT}
QUOTA_OPS = {"deploy", "scaleFunction", "warmFunction", "configureScaling", "invoke", "openaiChatCompletions",
             "openaiCompletions", "openaiModels"}    # the operations a quota_exceeded may answer
INTERNAL = (500, "internal", "a bug in the gateway (logged with its traceback; the caller gets no detail)")

_RETRY_AFTER = {"Retry-After": {"description": "whole seconds to wait", "required": True,
                                "schema": {"type": "string", "pattern": r"^\d+$"}}}
_STATUS_HEADERS = {401: {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
                   405: {"Allow": {"required": True, "schema": {"type": "string"}}},
                   429: _RETRY_AFTER, 503: _RETRY_AFTER}
_INVOCATION_ID = {"description": "the invocation's id (also in the function's log lines)",
                  "schema": {"type": "string"}}


def _error(status: int, invoke: bool, only: tuple[str, ...] | None = None, quota: bool = False) -> dict[str, Any]:
    codes = [(code, when) for s, code, when in ERRORS if s == status and (invoke or code not in INVOKE_ONLY)
             and (code in only if only is not None else code not in ONLY_WHERE_LISTED)
             and (quota or code != "quota_exceeded")]
    schema = {"allOf": [_ref("Error"), {"properties": {"error": {"properties": {
        "code": {"enum": [str(code) for code, _ in codes]}}}}}]}
    out: dict[str, Any] = {"description": "; ".join(f"`{code}`: {when}" for code, when in codes),
                           "content": {"application/json": {"schema": schema}}}
    headers = dict(_STATUS_HEADERS.get(status, {}))
    if invoke and status >= 500:
        headers[wire.INVOCATION_ID] = _INVOCATION_ID
    if headers:
        out["headers"] = headers
    return out


def _json(schema: _Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ADMIN_ERRORS = (401, 403, 429, 503)


def _op(op_id: str, tag: str, summary: str, ok: dict[int, Any], errors: tuple[int, ...], *,
        description: str = "", params: list | None = None, body: dict | None = None,
        security: bool | None = True, invoke: bool = False,
        codes: dict[int, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """One operation; SECURITY True: the bearer key, False: none, None: optional; CODES: the
    codes of a status that apply to it, where not all of ERRORS's do."""
    out: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = body
    out["responses"] = {**{str(s): r for s, r in ok.items()},
                        **{str(s): _error(s, invoke, (codes or {}).get(s), op_id in QUOTA_OPS)
                           for s in sorted(errors)}}
    out["security"] = {True: [{"bearer": []}], False: [], None: [{"bearer": []}, {}]}[security]
    return out


_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": _QNAME,
               "description": "the function's name (any other name is 404)"}
_TENANT_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "the tenant's id (another tenant's is 404 to a tenant's key)"}
_TENANT_QUERY = {"name": "tenant", "in": "query", "required": False, "schema": _TENANT_ID,
                 "description": "the platform admin acts in this tenant; a tenant's key naming another is 404"}


def _body(schema: _Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _optional_body(schema: _Schema) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


_COORD_ERRORS = (400, 401, 429, 503)
_SECRET_NAME = {"type": "string", "pattern": SECRET_NAME_RE.pattern}
_SECRET_PARAM = {"name": "name", "in": "path", "required": True, "schema": _SECRET_NAME,
                 "description": "the secret's name (what a manifest's `[secrets]` names)"}


def _coord(op_id: str, summary: str, ok: dict[str, Any], errors: tuple[int, ...] = (), *,
           body: dict | None = None, **kw: Any) -> dict[str, Any]:
    """A /v1/coord operation: the admin key or a function's coordination token; 413 with a body."""
    return _op(op_id, "coord", summary, {200: ok}, (*_COORD_ERRORS, *errors, *((413,) if body else ())),
               body=body, **kw)


def _coord_query(name: str, schema: _Schema, required: bool, description: str = "") -> dict[str, Any]:
    out = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        out["description"] = description
    return out


def _query_number(lo: float, hi: float) -> _Schema:
    return {"anyOf": [{"type": "number", "minimum": lo, "maximum": hi}, {"const": ""}],
            "description": "empty: the default"}


_PREFIX = _coord_query("prefix", {"type": "string"}, False, "only keys starting with this (default: all)")
_KEY_PARAM = {"name": "key", "in": "path", "required": True,
              "schema": {**_coord_name("the key"), "pattern": f"^[^@{_PRINTABLE}][^{_PRINTABLE}]*$"},
              "description": "the key (may contain '/'; keys starting with '@' are reserved)"}


_INVOKE_DESCRIPTION = """\
Calls the function with the request body. A body sent as JSON (`application/json`, `*/*+json`)
reaches the handler decoded (an empty body is `null`); any other content type as bytes. Of the
caller's headers only `Content-Type` reaches the function (and `X-Gantry-Timeout`, which may
only lower the function's timeout).

**Sync**: a result is answered as JSON (`dict`, `list`, number, `bool`, `None`), text (`str`)
or bytes, with `X-Gantry-Duration-Ms`.

**Streamed**: a handler that yields is answered `Transfer-Encoding: chunked` with
`X-Gantry-Stream: 1`, one chunk per item, each sent as it is produced (the gateway does not
buffer). The content type comes from the first item: text, bytes, or `application/x-ndjson` (one
JSON value per line). The response has no size limit. A failure after the headers went out
cannot change the status: the connection is closed without the final chunk, so a truncated
stream never looks complete (curl exits 18, aiohttp raises `ClientPayloadError`).

Delivery: at most once per call. The gateway forwards again only when an instance cannot
have started the request; a 502 `function_outcome_unknown` or a 504 may have run the function."""


_OPENAI_DESCRIPTION = """\
A vLLM function's engine route of the same path (docs/openai.md): point an OpenAI client at
`/v1/invoke/{name}/v1` with the tenant's key as its API key. The call is admitted as an invoke
is (the key's scope and rate limit, the tenant's quotas, the cold-start wait, the function's
timeout and `[limits] max_body`, metrics and usage) and forwarded with the instance's own key
as the engine's bearer key. Only `/v1/chat/completions`, `/v1/completions` and `/v1/models`
are served; the engine's other routes (`/health`, `/metrics`, `/sleep`, `/wake_up`...) are not
reachable, and a function whose runtime is not `vllm` answers 404 `not_openai_compatible`.

The engine's own answers pass through unchanged, errors included: an error the engine
answers (a bad model name, a prompt over the context length) is OpenAI's error JSON
(`{"error": {"message", "type", "param", "code"}}`) with the engine's status, not the
gateway's `Error`. `"stream": true` is answered `text/event-stream`, each event as the engine
sends it (the gateway does not buffer). Tokens are counted from the answer's `usage` object
(a stream has one only with `"stream_options": {"include_usage": true}`). An `Idempotency-Key`
is refused (400)."""
_OPENAI_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)
_OPENAI_CODES = {404: (ErrorCode.NOT_FOUND, "not_openai_compatible")}
_OPENAI_OK = {"description": "the engine's answer (a stream of events with `\"stream\": true`)",
              "headers": {wire.INVOCATION_ID: {**_INVOCATION_ID, "required": True}},
              "content": {"application/json": {"schema": {"type": "object"}},
                          "text/event-stream": {"schema": {"type": "string"},
                                                "description": "`data: {chunk}` events, then `data: [DONE]`"}}}
_OPENAI_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "the OpenAI request (`model`, `messages` or `prompt`, `max_tokens`, "
                                     "`stream`...), passed to the engine as it is"}}}}


def _openai_op(op_id: str, summary: str, get: bool = False) -> dict[str, Any]:
    return _op(op_id, "invoke", summary, {200: _OPENAI_OK}, _OPENAI_ERRORS, description=_OPENAI_DESCRIPTION,
               invoke=True, codes=_OPENAI_CODES, params=[_NAME_PARAM], body=None if get else _OPENAI_BODY)


_USAGE_PARAMS = [_coord_query("since", _USAGE_DAY, False, "the first day (default: the 1st of this month)"),
                 _coord_query("until", _USAGE_DAY, False, "the last day (default: today)")]
_USAGE_DESCRIPTION = ("Needs a key whose scope allows `usage` (admin, tenant-admin); 403 otherwise. Request counts "
                      "reach Redis within the gateways' flush interval (5 s); reserved resource-seconds within "
                      "the scheduler's accrual interval (15 s). A bad `since`/`until` is 400 naming it.")


_STATES = ["queued", "running", "succeeded", "failed", "retrying", "dead", "cancelled", "expired"]
SCHEMAS["Invocation"] = _obj({
    "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "function": _QNAME, "tenant": _TENANT_ID,
    "state": {"enum": _STATES}, "priority": {"enum": list(PRIORITIES)},
    "attempts": {"type": "integer", "minimum": 0, "description": "attempts started"},
    "max_attempts": {"type": "integer", "minimum": 1, "description": "1 + the function's `[async] max_retries`"},
    "created": {"type": "number"}, "updated": {"type": "number"},
    "started": _nullable({"type": "number", "description": "when the latest attempt was claimed"}),
    "finished": _nullable({"type": "number"}),
    "next_attempt_at": {"type": "number", "description": "retrying: when the next attempt is due"},
    "source": {"enum": ["api", "schedule"]}, "schedule": {"type": "string"},
    "idempotency_key": {"type": "string"}, "replays": {"type": "integer", "minimum": 1},
    "status": {"type": "integer", "description": "the HTTP status of the latest attempt's answer"},
    "error": _obj({"code": {"type": "string"}, "message": {"type": "string"}}),
    "result": {"description": "succeeded or failed: the result (JSON as JSON, text as a string, other bytes "
                              "base64 with `result_encoding`)"},
    "result_type": {"type": "string", "description": "the result's content type"},
    "result_encoding": {"const": "base64"},
    "callback": _obj({"url": {"type": "string"}, "state": {"type": "string"},
                      "attempts": {"type": "integer", "minimum": 0}, "error": _nullable({"type": "string"}),
                      "status": _nullable({"type": "integer"}), "delivered": _nullable({"type": "number"}),
                      "next_at": _nullable({"type": "number"})}, [], closed=False),
    "dead_at": {"type": "number", "description": "the dead-letter view: when it went dead or expired"},
    "payload_size": {"type": "integer", "minimum": 0}, "content_type": {"type": "string"},
}, ["id", "function", "tenant", "state", "priority", "attempts", "max_attempts", "created"],
    description="An async invocation (docs/async.md)")
_INV_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "the invocation's id (32 hex digits; another tenant's is 404)"}
_ASYNC_HEADERS = [
    {"name": "X-Gantry-Priority", "in": "header", "required": False, "schema": {"enum": list(PRIORITIES)},
     "description": "high is served first, low is never starved (default normal); anything else is 400"},
    {"name": "X-Callback-Url", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "receives the settled invocation as a signed POST (docs/async.md)"},
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
     "description": "the same key (for this function and tenant, within GANTRY_IDEMPOTENCY_TTL) returns the same "
                    "invocation, with no second run; the same key with another body is 422"}]
_ACCEPTED = _json(_obj({"id": {"type": "string"}, "state": {"enum": [*_STATES, "unknown"]},
                        "status_url": {"type": "string"}, "idempotent_replay": {"type": "boolean"}}),
                  "queued (or, for a known Idempotency-Key, the invocation it made)")

PATHS: dict[str, dict[str, Any]] = {
    "/v1/invoke/{name}/async": {"post": _op(
        "invokeAsync", "async", "Queue an async invocation", {202: {**_ACCEPTED, "headers": {
            "Location": {"required": True, "schema": {"type": "string"}},
            wire.INVOCATION_ID: {**_INVOCATION_ID, "required": True}}}},
        (400, 401, 403, 404, 413, 422, 429, 503), codes={422: ("idempotency_conflict",)},
        params=[_NAME_PARAM, *_ASYNC_HEADERS],
        description="Answers 202 once the invocation is stored and queued (it survives any gateway's crash). "
                    "The payload limit is the smaller of the function's `[limits] max_body` and "
                    "`GANTRY_ASYNC_MAX_PAYLOAD`. Failed attempts (5xx, timeout, crash) are retried per the "
                    "function's `[async]` policy; a 4xx answer settles it as failed.",
        body={"required": False, "content": {"application/json": {"schema": {}},
                                             "application/octet-stream": {"schema": {}}}})},
    "/v1/invocations/{id}": {
        "get": _op("getInvocation", "async", "An async invocation: state, attempts, result once done",
                   {200: _json(_ref("Invocation"), "the invocation")}, (400, 401, 403, 404, 429, 503),
                   params=[_INV_PARAM, {"name": "wait", "in": "query", "required": False,
                                        "schema": {"type": "number", "minimum": 0, "maximum": 60},
                                        "description": "seconds to wait for it to settle before answering"}]),
        "delete": _op("cancelInvocation", "async", "Cancel a queued (or retrying) invocation",
                      {200: _json(_obj({"id": {"type": "string"}, "state": {"const": "cancelled"},
                                        "was": {"enum": ["queued", "retrying"]}}), "cancelled")},
                      (401, 403, 404, 409, 429, 503), params=[_INV_PARAM], codes={409: ("not_cancellable",)}),
    },
    "/v1/invocations/{id}/result": {"get": _op(
        "getInvocationResult", "async", "A settled invocation's result, as the function returned it",
        {200: {"description": "the result's bytes with its content type and the attempt's status",
               "content": {"application/json": {"schema": {}}, "application/octet-stream": {"schema": {}}}}},
        (401, 403, 404, 409, 429, 503), params=[_INV_PARAM], codes={409: ("not_settled", "no_result")})},
    "/v1/dlq": {"get": _op(
        "listDeadLetters", "async", "Dead and expired invocations, oldest first",
        {200: _json(_obj({"invocations": {"type": "array", "items": _ref("Invocation")},
                          "next": _nullable({"type": "string", "description": "pass as `after` to read on"})}),
                    "the dead letters the key may see")},
        (400, 401, 403, 404, 429, 503),
        params=[_TENANT_QUERY, _coord_query("function", {"type": "string"}, False, "only this function's"),
                _coord_query("after", {"type": "string"}, False, "the `next` of the previous page"),
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}])},
    "/v1/dlq/{id}": {
        "get": _op("getDeadLetter", "async", "A dead letter, with its payload's size",
                   {200: _json(_ref("Invocation"), "the dead letter")}, (401, 403, 404, 429, 503),
                   params=[_INV_PARAM]),
        "delete": _op("purgeDeadLetter", "async", "Drop a dead letter and its record",
                      {200: _json(_obj({"id": {"type": "string"}, "purged": {"const": True}}), "gone")},
                      (401, 403, 404, 429, 503), params=[_INV_PARAM]),
    },
    "/v1/dlq/{id}/replay": {"post": _op(
        "replayDeadLetter", "async", "Run a dead letter again (the same id, its attempts from zero)",
        {202: _json(_obj({"id": {"type": "string"}, "state": {"const": "queued"},
                          "status_url": {"type": "string"}}), "queued again")},
        (401, 403, 404, 409, 429, 503), params=[_INV_PARAM], codes={409: ("not_deployed",)})},
    "/v1/invoke/{name}/v1/chat/completions": {"post": _openai_op(
        "openaiChatCompletions", "A vLLM function's chat completion (OpenAI-compatible)")},
    "/v1/invoke/{name}/v1/completions": {"post": _openai_op(
        "openaiCompletions", "A vLLM function's text completion (OpenAI-compatible)")},
    "/v1/invoke/{name}/v1/models": {"get": _openai_op(
        "openaiModels", "The model a vLLM function serves (OpenAI-compatible)", get=True)},
    "/v1/invoke/{name}": {"post": _op(
        "invoke", "invoke", "Invoke a function (sync or streamed)",
        {200: {"description": "the function's result, or its stream",
               "headers": {wire.INVOCATION_ID: {**_INVOCATION_ID, "required": True},
                           wire.DURATION_MS: {"description": "milliseconds in the runtime (not on a non-empty "
                                                             "stream)", "schema": {"type": "string"}},
                           wire.STREAM: {"description": "`1` when the body is a stream",
                                         "schema": {"const": "1"}}},
               "content": {"application/json": {"schema": {}},
                           "text/plain": {"schema": {"type": "string"}},
                           "application/octet-stream": {"schema": {}},
                           "application/x-ndjson": {"schema": {"type": "string"},
                                                    "description": "a stream of JSON values, one a line"}}}},
        (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504),
        description=_INVOKE_DESCRIPTION, invoke=True, codes={409: ("cancelled",), 422: ("idempotency_conflict",)},
        params=[_NAME_PARAM, {"name": wire.TIMEOUT, "in": "header", "required": False,
                              "schema": {"type": "string"},
                              "description": "seconds, a positive number: lowers the function's timeout "
                                             "(never raises it); anything else is 400"},
                {**_ASYNC_HEADERS[2], "description": "runs the call once: a repeat of the key (within "
                                                     "GANTRY_IDEMPOTENCY_TTL) answers the first call's stored "
                                                     "result with `Idempotent-Replayed: true`, and the result is "
                                                     "answered whole (not streamed); another body is 422"}],
        body={"required": False, "content": {"application/json": {"schema": {}},
                                             "text/plain": {"schema": {"type": "string"}},
                                             "application/octet-stream": {"schema": {}}}})},
    "/v1/functions": {
        "post": _op("deploy", "functions", "Deploy a new version of a function",
                    {201: _json(_ref("Deployed"), "the version registered (the scheduler starts its instances; "
                                                  "traffic moves once they are ready)")},
                    (400, 413, *_ADMIN_ERRORS), body=_body(_ref("DeployRequest")),
                    description="What `gantry deploy` calls after building the image. The spec is validated "
                                "as a manifest is (400 names the field and what was expected), including rules "
                                "between fields that the schema cannot say: `scaling.min_instances` at most "
                                "`max_instances`, `resources.cpu_request` at most `cpu` (and 0 or at least "
                                "0.01), `resources.memory` at least 6Mi and `limits.timeout` above zero in any "
                                "unit, and `runtime = \"vllm\"` needs a `model` (and no handler; `resources.gpu` 0 runs the "
                                "CPU engine).  A GPU function "
                                "(`resources.gpu` or `gpu_memory`, never both; `gpu_type` only with one of them) "
                                "that no live node could ever hold (too few GPUs of its type on any one node, "
                                "or none with that much memory) is refused with what is missing named."),
        "get": _op("listFunctions", "functions", "List functions",
                   {200: _json(_obj({"functions": {"type": "array", "items": _ref("FunctionSummary")}}),
                               "every deployed function, by name")}, _ADMIN_ERRORS),
    },
    "/v1/functions/{name}": {
        "get": _op("getFunction", "functions", "A function, its specs and its instances",
                   {200: _json(_ref("Function"), "the function")}, (404, *_ADMIN_ERRORS), params=[_NAME_PARAM]),
        "delete": _op("deleteFunction", "functions", "Delete a function (its instances are drained)",
                      {200: _json(_obj({"name": _QNAME, "deleted": {"const": True}}), "deleted")},
                      (404, *_ADMIN_ERRORS), params=[_NAME_PARAM]),
    },
    "/v1/functions/{name}/scale": {"post": _op(
        "scaleFunction", "functions", "Keep at least N instances ready (`gantry scale`)",
        {200: _json(_obj({"name": _QNAME, "min_instances": {"type": "integer", "minimum": 0}}), "the new floor")},
        (400, 404, 413, *_ADMIN_ERRORS), params=[_NAME_PARAM],
        description="`min_instances` above the latest version's `scaling.max_instances` is 400.",
        body=_body(_obj({"min_instances": {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES,
                                           "description": "at most the latest version's scaling.max_instances"}},
                        closed=False)))},
    "/v1/functions/{name}/warm": {"post": _op(
        "warmFunction", "functions", "Hold at least N instances ready for a while (`gantry warm`)",
        {200: _json(_obj({"name": _QNAME, "instances": {"type": "integer", "minimum": 0},
                          "until": _nullable({"type": "number", "description": "unix seconds; null: no hold"})}),
                    "the hold")},
        (400, 404, 413, *_ADMIN_ERRORS), params=[_NAME_PARAM],
        description="The scheduler keeps at least `instances` of the function (at most its `max_instances`, "
                    "else 400) until the time passes, then scales down as usual (after `idle_timeout`). "
                    "`instances` 0 ends a hold. Counted against the tenant's `instances` quota like "
                    "`min_instances`.",
        body=_body(_obj({"instances": {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES},
                         "for": _duration("how long (default 10m)")}, ["instances"])))},
    "/v1/functions/{name}/scaling": {"patch": _op(
        "configureScaling", "functions", "Change the scaling policy without a build (`gantry scaling`)",
        {200: _json(_obj({"name": _QNAME, "version": {"type": "integer", "minimum": 1},
                          "active": {"type": "integer", "minimum": 1,
                                     "description": "the version taking traffic (the new one once it is ready)"},
                          "changed": {"type": "boolean", "description": "false: the patch changed nothing and "
                                                                        "no version was made"},
                          "scaling": SCHEMAS["Spec"]["properties"]["scaling"]}),
                    "the version that holds the policy now: a new one, or the latest when nothing changed")},
        (400, 404, 409, 413, *_ADMIN_ERRORS), params=[_NAME_PARAM], codes={409: ("conflict",)},
        description="Any of the manifest's `[scaling]` fields, applied to the latest version's spec and "
                    "registered with the same image as a new version, as a deploy is (the `functions` "
                    "quota, the audit entry `function.scaling`, the rollout: new instances replace the "
                    "old once ready). The spec is validated as a manifest is (400 names the field, such "
                    "as `scaling.min_instances: expected at most max_instances (2), got 3`); raising "
                    "`min_instances` above the tenant's `instances` quota is 403. A patch that changes "
                    "nothing answers the latest version with `changed` false.",
        body=_body({**SCHEMAS["SpecInput"]["properties"]["scaling"], "minProperties": 1}))},
    "/v1/functions/{name}/decisions": {"get": _op(
        "functionDecisions", "functions", "The scheduler's last scaling decisions, newest first",
        {200: _json(_obj({"name": _QNAME, "decisions": {"type": "array", "items": _ref("ScalingDecision")}}),
                    "each change of the target, and each time a cooldown started holding one back")},
        (400, 404, *_ADMIN_ERRORS),
        params=[_NAME_PARAM, {"name": "limit", "in": "query", "required": False,
                              "schema": {"type": "integer", "minimum": 1, "maximum": keys.MAX_DECISIONS,
                                         "default": keys.MAX_DECISIONS}}])},
    "/v1/functions/{name}/logs": {"get": _op(
        "functionLogs", "functions", "The function's container logs, oldest first, after a cursor",
        {200: _json(_obj({"name": _QNAME, "entries": {"type": "array", "items": _ref("LogEntry")},
                          "cursor": _nullable({"type": "string", "description": "pass as `after` for the next "
                                                                                "page"}),
                          "more": {"type": "boolean", "description": "whether more entries may follow now "
                                                                     "(the page is full, or the filters read "
                                                                     f"{LOG_SCAN_MAX} entries); false at the "
                                                                     "stream's end"}}),
                    "up to `limit` entries (none for a name that was never deployed, or removed: its logs "
                    "go with it)")},
        (400, 404, *_ADMIN_ERRORS),
        description="Each function keeps about `GANTRY_LOG_MAXLEN` lines (default 1000; the oldest are "
                    "trimmed). Filters are applied here: `since`, `instance`, `level`; `tail` gives the last "
                    "N matching entries (oldest first) and a cursor at the newest entry, to follow from.",
        params=[_NAME_PARAM,
                {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "entries from this time on: a duration back from now (`90s`, `10m`, `1h30m`, "
                                "`2d`), an ISO 8601 time (no zone: UTC) or epoch seconds"},
                {"name": "instance", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
                 "description": "only this instance's: its id, or a prefix of the id or of its random part"},
                {"name": "level", "in": "query", "required": False,
                 "schema": {"enum": ["debug", "info", "warning", "error", "critical", "warn"]},
                 "description": "this level and above; a line that is not JSON counts as info"},
                {"name": "tail", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOG_ENTRIES},
                 "description": "the last N matching entries (then `limit` does not apply)"},
                {"name": "after", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": r"^(\d{1,20}(-\d{1,20})?)?$"},
                 "description": "a cursor: a Redis stream id such as 1700000000000-0 (each part at most "
                                "2**64-1); absent or empty: from the oldest entry kept"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOG_ENTRIES, "default": 100}}])},
    "/v1/whoami": {"get": _op(
        "whoami", "keys", "The calling key's tenant and scope",
        {200: _json(_obj({"tenant": _TENANT_ID, "scope": _SCOPE, "key_id": {"type": "string"},
                          "functions": _nullable({"type": "array", "items": _NAME})}), "the caller")},
        _ADMIN_ERRORS)},
    "/v1/tenants": {
        "post": _op("createTenant", "tenants", "Create a tenant (platform admin)",
                    {201: _json(_ref("Tenant"), "the tenant")}, (400, 409, 413, *_ADMIN_ERRORS),
                    body=_body(_ref("TenantInput"))),
        "get": _op("listTenants", "tenants", "Tenants (a tenant's key: its own)",
                   {200: _json(_obj({"tenants": {"type": "array", "items": _ref("Tenant")}}), "by id")},
                   _ADMIN_ERRORS),
    },
    "/v1/tenants/{id}": {
        "get": _op("getTenant", "tenants", "A tenant", {200: _json(_ref("Tenant"), "the tenant")},
                   (404, *_ADMIN_ERRORS), params=[_TENANT_PARAM]),
        "patch": _op("updateTenant", "tenants", "Change a tenant's name, isolation, quotas or features (platform admin)",
                     {200: _json(_ref("Tenant"), "the tenant as changed")}, (400, 404, 413, *_ADMIN_ERRORS),
                     params=[_TENANT_PARAM], body=_body(_ref("TenantUpdate")),
                     description="A new isolation level applies to instances started from then on."),
        "delete": _op("removeTenant", "tenants", "Remove a tenant without functions, and its keys (platform admin)",
                      {200: _json(_obj({"id": _TENANT_ID, "removed": {"const": True},
                                        "keys_removed": {"type": "integer", "minimum": 0}}), "removed")},
                      (404, 409, *_ADMIN_ERRORS), params=[_TENANT_PARAM]),
    },
    "/v1/keys": {
        "post": _op("createKey", "keys", "Make an API key (shown once, in this answer only)",
                    {201: _json(_obj({**SCHEMAS["Key"]["properties"], "key": {"type": "string",
                                      "pattern": KEY_RE.pattern}}, ["id", "key"]), "the key, whole, this once")},
                    (400, 404, 413, *_ADMIN_ERRORS), body=_body(_ref("KeyInput")), params=[_TENANT_QUERY]),
        "get": _op("listKeys", "keys", "API keys of the caller's tenant (the platform admin: every tenant's)",
                   {200: _json(_obj({"keys": {"type": "array", "items": _ref("Key")}}), "never the keys themselves")},
                   (404, *_ADMIN_ERRORS), params=[_TENANT_QUERY]),
    },
    "/v1/keys/{id}": {"delete": _op(
        "revokeKey", "keys", "Revoke a key: every gateway refuses it within seconds",
        {200: _json(_obj({"id": {"type": "string"}, "revoked": {"const": True},
                          "already": {"type": "boolean"}}), "revoked (already: it was before)")},
        (404, *_ADMIN_ERRORS), params=[{"name": "id", "in": "path", "required": True,
                                        "schema": {"type": "string"}, "description": "the key's id"}])},
    "/v1/secrets": {"get": _op(
        "listSecrets", "secrets", "The tenant's secrets: names, times, the functions naming each; never a value",
        {200: _json(_ref("SecretList"), "the secrets of the tenant the call acts in, by name")},
        (404, *_ADMIN_ERRORS), params=[_TENANT_QUERY])},
    "/v1/secrets/{name}": {
        "put": _op("setSecret", "secrets", "Set a secret (sealed at once; the value is never shown again)",
                   {200: _json(_ref("SecretSet"), "replaced (running instances keep the old value until they "
                                                  "restart)"),
                    201: _json(_ref("SecretSet"), "created")},
                   (400, 404, 409, 413, *_ADMIN_ERRORS), params=[_SECRET_PARAM, _TENANT_QUERY],
                   body=_body(_obj({"value": {"type": "string", "minLength": 1,
                                              "description": f"UTF-8 text, at most {MAX_VALUE_BYTES} bytes, no "
                                                             "NUL"}}, ["value"])),
                   codes={409: ("too_many_secrets",), 503: ("unavailable", "secrets_unavailable")},
                   description="Needs a key whose scope allows `secrets` (admin, tenant-admin). The gateway "
                               "seals the value with AES-256-GCM under its master key; Redis holds only the "
                               "sealed bytes. A 503 `secrets_unavailable` names the setting to fix."),
        "delete": _op("deleteSecret", "secrets", "Remove a secret",
                      {200: _json(_obj({"name": _SECRET_NAME, "tenant": {"type": "string"},
                                        "deleted": {"const": True}}), "removed")},
                      (400, 404, *_ADMIN_ERRORS), params=[_SECRET_PARAM, _TENANT_QUERY],
                      description="Functions that name it fail their next start (an instance running keeps "
                                  "its value until it stops); a deploy naming it is refused."),
    },
    "/v1/callbacks/secret": {"get": _op(
        "callbackSecret", "secrets", "The secret the tenant's async invocation callbacks are signed with",
        {200: _json(_obj({"tenant": _TENANT_ID,
                          "secret": {"type": "string", "pattern": "^([0-9a-f]{2})+$",
                                     "description": "the HMAC key, hex: a receiver uses the bytes it encodes"},
                          "algorithm": {"const": signing.ALGORITHM}, "header": {"const": signing.HEADER}}),
                    "the tenant's signing secret")},
        (404, *_ADMIN_ERRORS), params=[_TENANT_QUERY],
        description="Needs a key whose scope allows `secrets` (admin, tenant-admin); each read is audited "
                    "(`callback_secret.read`). A callback POST carries `X-Gantry-Signature: t=<unix seconds>,"
                    "v1=<hex HMAC-SHA256 of \"<t>.\" + body>` (docs/async.md). A tenant's secret is "
                    "derived from the platform's (`GANTRY_CALLBACK_SECRET`, or one the gateways make and keep in "
                    "Redis) and changes with it.")},
    "/v1/nodes": {"get": _op(
        "listNodes", "nodes", "Live worker nodes, their capacity and what is placed on them",
        {200: _json(_obj({"nodes": {"type": "array", "items": _ref("Node")}}), "the nodes whose heartbeat is live")},
        _ADMIN_ERRORS)},
    "/v1/usage": {"get": _op(
        "ownUsage", "usage", "The caller's tenant's usage and cost (`gantry usage`)",
        {200: _json(_ref("UsageReport"), "per function and in total, with the cost")},
        (400, 404, *_ADMIN_ERRORS), params=_USAGE_PARAMS + [_coord_query(
            "tenant", {"type": "string"}, False, "the platform admin only: another tenant (a tenant key naming "
                                                 "another tenant: 404)")],
        description=_USAGE_DESCRIPTION)},
    "/v1/tenants/{id}/usage": {"get": _op(
        "tenantUsage", "usage", "A tenant's usage and cost",
        {200: _json(_ref("UsageReport"), "per function and in total, with the cost")},
        (400, 404, *_ADMIN_ERRORS),
        params=[{"name": "id", "in": "path", "required": True, "schema": _TENANT,
                 "description": "the tenant (a tenant key: its own only; any other is 404)"}, *_USAGE_PARAMS],
        description=_USAGE_DESCRIPTION)},
    "/v1/schedules": {"get": _op(
        "listSchedules", "schedules", "The [[schedules]] of the caller's functions (`gantry schedules ls`)",
        {200: _json(_obj({"schedules": {"type": "array", "items": _ref("Schedule")}}),
                    "each schedule of each function's active version, by function")},
        (404, *_ADMIN_ERRORS),
        params=[_TENANT_QUERY, {"name": "function", "in": "query", "required": False, "schema": _QNAME,
                                "description": "only this function's (404 if there is no such function)"}],
        description="A tenant's key sees its tenant's functions; the platform admin every tenant's, or one "
                    "tenant's with `tenant`. Each tick fires one async invocation (docs/async.md).")},
    "/v1/audit": {"get": _op(
        "audit", "usage", "The audit trail of admin actions (`gantry audit`)",
        {200: _json(_obj({"entries": {"type": "array", "items": _ref("AuditEntry")},
                          "cursor": _nullable({"type": "string", "description": "pass as `after` to read on"})}),
                    "oldest first: the latest `limit` entries, or the first `limit` after `after`")},
        (400, 404, *_ADMIN_ERRORS),
        params=[_coord_query("tenant", {"type": "string"}, False,
                             "only this tenant's entries (the platform admin; a tenant key sees only its own "
                             "and naming another is 404)"),
                {"name": "after", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": r"^(\d{1,20}(-\d{1,20})?)?$"},
                 "description": "a cursor (an entry's id); absent: the latest entries"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_ENTRIES, "default": 100}}],
        description="Needs a key whose scope allows `audit` (admin, tenant-admin); 403 otherwise. A filtered "
                    "read looks at most 10,000 entries per call: fewer than `limit` with a cursor means read on.")},
    **{path: item for path, item in (
        ("/v1/coord/lock/acquire", {"post": _coord(
            "lockAcquire", "Acquire a lock (waiting in line up to `wait` s)",
            _json(_ref("LockGrant"), "granted with a fencing token, or not (`acquired` false: ask again)"),
            body=_body(_ref("LockAcquireRequest")),
            description="A waiter keeps its place in line while it asks again; one that gives up leaves the "
                        "line. Each grant's token is larger than every earlier one of the lock: pass it as "
                        "`fence` with writes so a holder that lost the lock cannot write.")}),
        ("/v1/coord/lock/renew", {"post": _coord(
            "lockRenew", "Extend a held lock's lease", _json(_obj({"renewed": {"const": True}}), "renewed"),
            (409,), body=_body(_ref("LockRenewRequest")), codes={409: (CoordCode.LOCK_LOST,)})}),
        ("/v1/coord/lock/release", {"post": _coord(
            "lockRelease", "Release a held lock (the next in line gets it)",
            _json(_obj({"released": {"type": "boolean"}}), "false when it was not held with that token"),
            body=_body(_ref("LockReleaseRequest")))}),
        ("/v1/coord/lock", {"get": _coord(
            "lockInfo", "Who holds a lock", _json(_ref("LockHolder"), "the holder, token and lease left, if held"),
            params=[_coord_query("name", _coord_name("the lock"), True)])}),
        ("/v1/coord/state", {"get": _coord(
            "stateList", "The keys under a prefix, at one revision", _json(_ref("StateItems"), "sorted by key"),
            params=[_PREFIX, _coord_query("limit", _query_number(1, MAX_LIST),
                                          False, "most keys (default 1000)")])}),
        ("/v1/coord/state/{key}", {
            "get": _coord("stateGet", "A key's value and revision", _json(_ref("StateEntry"), "the key"), (404,),
                          params=[_KEY_PARAM]),
            "put": _coord("stateSet", "Set a key (optionally compare-and-swap, fenced)",
                          _json(_ref("StateEntry"), "written, with its new revision"), (404, 409),
                          params=[_KEY_PARAM], body=_body(_ref("StateSetRequest")),
                          codes={409: (CoordCode.FENCE_STALE, CoordCode.VERSION_MISMATCH)}),
            "delete": _coord("stateDelete", "Delete a key (optionally compare-and-swap, fenced)",
                             _json(_ref("StateEntry"), "deleted: `value` null, the revision of the deletion"),
                             (404, 409), params=[_KEY_PARAM], body=_optional_body(_ref("StateDeleteRequest")),
                             codes={409: (CoordCode.FENCE_STALE, CoordCode.VERSION_MISMATCH)}),
        }),
        ("/v1/coord/incr/{key}", {"post": _coord(
            "stateIncrement", "Add to an integer key (a missing key counts as 0)",
            _json(_ref("StateEntry"), "the new value and revision"), (404, 409), params=[_KEY_PARAM],
            body=_optional_body(_ref("StateIncrementRequest")),
            codes={409: (CoordCode.FENCE_STALE, CoordCode.VERSION_MISMATCH, CoordCode.NOT_AN_INTEGER)})}),
        ("/v1/coord/watch", {"get": _coord(
            "watch", "The changes after a revision (a long poll)",
            _json(_ref("Changes"), "the changes under the prefix after `after`, in order (none when the timeout "
                                   "passed first)"), (410,),
            description="Waits up to `timeout` s for the first change; ask next from the answer's `revision`. "
                        f"At most {MAX_EVENTS} changes an answer.",
            params=[_PREFIX,
                    _coord_query("after", _query_number(0, 2**53), False,
                                 "the revision last seen (default 0)"),
                    _coord_query("timeout", _query_number(0, MAX_WAIT), False,
                                 f"seconds to wait for a change (default 0, at most {MAX_WAIT:g})")])}),
        ("/v1/coord/queue/put", {"post": _coord(
            "queuePut", "Put an item on a queue", _json(_obj({"id": {"type": "integer", "minimum": 1}}), "queued"),
            body=_body(_ref("QueuePutRequest")))}),
        ("/v1/coord/queue/get", {"post": _coord(
            "queueGet", "Take an item, waiting up to `timeout` s (a long poll)",
            _json(_ref("Delivery"), "an item, or null"), body=_body(_ref("QueueGetRequest")),
            description="The item stays out for `visibility` s: ack it within that, or it is delivered again "
                        "(after `max_deliveries` it moves to the queue NAME.dead).")}),
        ("/v1/coord/queue/ack", {"post": _coord(
            "queueAck", "Done with a delivered item", _json(_obj({"ok": {"const": True}}), "settled"), (409,),
            body=_body(_ref("QueueAckRequest")), codes={409: (CoordCode.FENCE_STALE, CoordCode.RECEIPT_STALE)})}),
        ("/v1/coord/queue/nack", {"post": _coord(
            "queueNack", "Give a delivered item back (delivered again after `delay` s)",
            _json(_obj({"ok": {"const": True}}), "settled"), (409,), body=_body(_ref("QueueNackRequest")),
            codes={409: (CoordCode.RECEIPT_STALE,)})}),
        ("/v1/coord/queue", {"get": _coord(
            "queueDepth", "How many items wait and how many are out",
            _json(_obj({"ready": {"type": "integer", "minimum": 0}, "inflight": {"type": "integer", "minimum": 0}}),
                  "the counts"), params=[_coord_query("name", _coord_name("the queue"), True)])}),
        ("/v1/coord/service/register", {"post": _coord(
            "serviceRegister", "Register (or update) a service instance for `ttl` s",
            _json(_obj({"ok": {"const": True}}), "registered"), body=_body(_ref("ServiceRegisterRequest")))}),
        ("/v1/coord/service/heartbeat", {"post": _coord(
            "serviceHeartbeat", "Keep a registration alive another `ttl` s",
            _json(_obj({"ok": {"const": True}}), "renewed"), (404,), body=_body(_ref("ServiceHeartbeatRequest")),
            description="404 when it is not registered (it expired): register again.")}),
        ("/v1/coord/service/deregister", {"post": _coord(
            "serviceDeregister", "Remove a registration",
            _json(_obj({"removed": {"type": "boolean"}}), "false when it was not registered"),
            body=_body(_ref("ServiceDeregisterRequest")))}),
        ("/v1/coord/service", {"get": _coord(
            "serviceList", "A service's live instances",
            _json(_obj({"instances": {"type": "array", "items": _ref("ServiceInstance")}}), "the live ones"),
            params=[_coord_query("name", _coord_name("the service"), True)])}),
        ("/v1/coord/service/pick", {"get": _coord(
            "servicePick", "One live instance, by weighted round-robin",
            _json(_obj({"instance": _ref("ServiceInstance")}), "the instance picked"), (404,),
            params=[_coord_query("name", _coord_name("the service"), True)],
            description="404 when no instance with a weight above 0 is live.")}),
    )},
    PATH: {"get": _op("openapi", "meta", "This document", {200: _json({"type": "object"}, "OpenAPI 3.1")}, (),
                      security=False)},
    "/healthz": {"get": _op("health", "meta", "The gateway is up",
                            {200: _json(_obj({"status": {"const": "ok"}, "gateway": {"type": "string"}}),
                                        "always, while the process serves (it does not check Redis)")}, (),
                            security=False)},
    "/metrics": {"get": _op(
        "metrics", "meta", "Prometheus metrics",
        {200: {"description": "Prometheus text format",
               "content": {"text/plain": {"schema": {"type": "string"}}}}},
        (401, 403, 429), security=None,
        description="Needs the admin key unless the gateway runs with `GANTRY_METRICS_PUBLIC=1`. Rendered by "
                    "prometheus_client: counters per function (`gantry_gateway_requests_total` by status, "
                    "`_cold_waits_total`, `_retries_total`, `_stream_aborts_total`), gauges (`_inflight`, "
                    "`_waiting`) and histograms (`gantry_gateway_request_duration_seconds`, "
                    "`_forward_duration_seconds`, `_cold_start_wait_seconds`); docs/metrics.md.")},
}

# --- metrics (gateway/metrics_api.py; docs/metrics.md) -------------------------------------------
from ..metrics.model import STEP_NAMES  # noqa: E402  (kept with the section it serves)
_COUNT = {"type": "integer", "minimum": 0}
_SECS = _nullable({"type": "number", "minimum": 0})
_METRICS_POINT = {
    "invocations": {**_COUNT, "description": "calls of the deployed function past the rate limit, and async attempts"},
    "async_attempts": {**_COUNT, "description": "of which async attempts"},
    "errors": {**_COUNT, "description": "invocations answered >= 500"},
    "errors_by_code": {"type": "object", "additionalProperties": _COUNT,
                       "description": "the gateway's error code (timeout, no_capacity, function_crashed...) or, "
                                      "for an error the function answered itself, its HTTP status (\"500\")"},
    "throttles": {**_COUNT, "description": "429s: the key's rate limit or the tenant's rate or concurrency quota"},
    "cold_starts": {**_COUNT, "description": "invocations that waited for an instance (a free slot)"},
    "cold_wait_avg": {**_SECS, "description": "their average wait, seconds (null: none)"},
    "duration": _obj({q: {**_SECS, "description": f"{q}, seconds (null: no invocations)"}
                      for q in ("avg", "p50", "p95", "p99")},
                     description="gateway wall time of the invocations; percentiles from log-spaced buckets "
                                 "(each 9 % wide), reported at the bucket's middle"),
    "concurrency_avg": {"type": "number", "minimum": 0, "description": "busy seconds / seconds: average in flight"},
    "inflight_peak": {**_COUNT, "description": "the most in flight one gateway saw at once (sampled each second)"},
    "instances_peak": {**_COUNT, "description": "the most ready instances seen (sampled each second)"},
    "tokens_in": {**_COUNT, "description": "prompt tokens of a vLLM function's answers that carried a `usage` "
                                           "object (docs/openai.md); 0 for other functions"},
    "tokens_out": {**_COUNT, "description": "completion tokens of those answers"},
}
SCHEMAS["MetricsPoint"] = _obj(_METRICS_POINT)
SCHEMAS["MetricsSeriesPoint"] = _obj({"start": {**_COUNT, "description": "the point's start (epoch seconds)"},
                                      **_METRICS_POINT})
SCHEMAS["MetricsReport"] = _obj({
    "name": {"type": "string", "description": "the function, as named in the path (function metrics only)"},
    "tenant": _TENANT,
    "range": {**_COUNT, "description": "seconds covered (as asked, in whole minutes)"},
    "retention": {"type": "number", "description": "seconds metrics are kept (GANTRY_METRICS_RETENTION)"},
    "recording": {"type": "boolean", "description": "false: this gateway runs with GANTRY_METRICS=0"},
    "since": {**_COUNT, "description": "start of the first point (epoch seconds)"},
    "until": {**_COUNT, "description": "end of the last point (epoch seconds; the current minute included)"},
    "step": {**_COUNT, "description": "seconds per point"},
    "totals": _ref("MetricsPoint"),
    "series": {"type": "array", "items": _ref("MetricsSeriesPoint"),
               "description": "one point per step, oldest first (every step, empty ones too)"},
}, ["tenant", "range", "retention", "recording", "since", "until", "step", "totals", "series"])
_METRICS_PARAMS = [
    _coord_query("range", {"type": "string", "pattern": r"^(\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*)?$"}, False,
                 "how far back: 30m, 1h, 24h, 7d... (absent or empty: 1h; at least 1m, at most the retention)"),
    _coord_query("step", {"enum": ["", *STEP_NAMES]}, False,
                 "per point (absent or empty: the smallest that shows the range in at most 360 points)")]
_METRICS_DESCRIPTION = ("Per-minute rows written by every gateway every `GANTRY_METRICS_FLUSH_INTERVAL` (5 s): "
                        "replicas and minutes combine exactly. Needs a key whose scope allows `read` (admin, "
                        "tenant-admin, deploy); 403 otherwise. A bad `range` or `step` is 400 naming it.")
PATHS.update({
    "/v1/functions/{name}/metrics": {"get": _op(
        "functionMetrics", "functions", "A function's metrics per minute over a range (`gantry metrics NAME`)",
        {200: _json(_ref("MetricsReport"), "totals and a series of points")},
        (400, 404, *_ADMIN_ERRORS), params=[_NAME_PARAM, *_METRICS_PARAMS],
        description=_METRICS_DESCRIPTION + " A function that is not deployed is 404.")},
    "/v1/tenants/{id}/metrics": {"get": _op(
        "tenantMetrics", "usage", "A tenant's metrics per minute, its functions together (`gantry metrics --tenant`)",
        {200: _json(_ref("MetricsReport"), "totals and a series of points")},
        (400, 404, *_ADMIN_ERRORS),
        params=[{"name": "id", "in": "path", "required": True, "schema": _TENANT,
                 "description": "the tenant (a tenant key: its own only; any other is 404)"}, *_METRICS_PARAMS],
        description=_METRICS_DESCRIPTION)},
})

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Gantry HTTP API",
        "version": API_VERSION,
        "description": "The gateway's API: invoke functions, and the admin API that deploys, scales and "
                       "inspects them, and the coordination API functions use (locks, state, queues, services; "
                       "docs/coordination.md). Every call under /v1 but this document needs "
                       "`Authorization: Bearer KEY` (under /v1/coord/ a function's coordination token will do). "
                       "Every error is JSON `{\"error\": {\"code\", \"message\"}}`; the codes each status may "
                       f"carry are listed per operation. A 500 `{INTERNAL[1]}` is {INTERNAL[2]}, listed on no "
                       "operation.",
    },
    "tags": [{"name": "invoke", "description": "calling functions"},
             {"name": "functions", "description": "the admin API: functions (the admin key)"},
             {"name": "nodes", "description": "the admin API: worker nodes (the admin key)"},
             {"name": "secrets", "description": "the tenant's secrets (docs/tenants.md, \"Secrets\"): set, list, "
                                                "remove; values go in and never come out"},
             {"name": "coord", "description": "coordination for functions: locks with fencing tokens, state with a "
                                              "watched revision log, queues, service discovery (the admin key or a "
                                              "function's coordination token; names live in the caller's "
                                              "namespace)"},
             {"name": "usage", "description": "usage, cost and the audit trail (docs/tenants.md)"},
             {"name": "schedules", "description": "cron schedules that fire async invocations "
                                                  "(docs/async.md)"},
             {"name": "meta", "description": "health, metrics and this document"}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "an API key (`gantry up` prints the admin key once)"}},
    },
}

BODY = json.dumps(DOCUMENT, indent=None, separators=(",", ":")).encode()


def render_markdown(doc: dict[str, Any] = DOCUMENT) -> str:
    """docs/api.md: the document as a reader wants it (``scripts/render_api.py`` writes it)."""
    lines = ["<!-- Generated from platform/gantry/gateway/openapi.py by scripts/render_api.py: do not edit. -->",
             "", f"# {doc['info']['title']}", "", doc["info"]["description"], "",
             f"The machine-readable document (OpenAPI {doc['openapi']}) is served at `GET {PATH}` "
             "without a key.", "", "| method | path | summary | key |", "|---|---|---|---|"]
    ops = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    for path, method, op in ops:
        lines.append(f"| {method.upper()} | `{path}` | [{op['summary']}](#{op['operationId'].lower()}) | "
                     f"{_key(op['security'])} |")
    lines += ["", "## Errors", "", "| status | code | when |", "|---|---|---|"]
    lines += [f"| {status} | `{code}` | {when} |"
              for status, code, when in sorted([*ERRORS, INTERNAL], key=lambda e: e[0])]
    for path, method, op in ops:
        lines += ["", f"## {op['operationId']}", "", f"`{method.upper()} {path}`: {op['summary']}.", ""]
        if op.get("description"):
            lines += [op["description"], ""]
        for p in op.get("parameters", []):
            lines.append(f"- {p['in']} `{p['name']}`{' (required)' if p.get('required') else ''}: "
                         f"{_schema_text(p['schema'])}{'. ' + p['description'] if p.get('description') else ''}")
        if "requestBody" in op:
            for media, content in op["requestBody"]["content"].items():
                lines.append(f"- body `{media}`: {_schema_text(content['schema'])}")
        if op.get("parameters") or "requestBody" in op:
            lines.append("")
        lines += ["| status | answer |", "|---|---|"]
        for status, resp in op["responses"].items():
            media = ", ".join(f"`{m}`" for m in resp.get("content", {}))
            ok_schema = next(iter(resp.get("content", {}).values()), {}).get("schema", {})
            what = _codes(resp) if int(status) >= 400 else (
                f"{resp['description']}: {media}" + (f" {_schema_text(ok_schema)}" if "$ref" in ok_schema
                                                     or "properties" in ok_schema else ""))
            lines.append(f"| {status} | {what} |")
    lines += ["", "## Schemas"]
    for name, schema in doc["components"]["schemas"].items():
        lines += ["", f"### {name}", ""]
        if schema.get("description"):
            lines += [schema["description"], ""]
        lines += ["| field | type | required | notes |", "|---|---|---|---|"]
        lines += _field_rows(schema, "")
    return "\n".join(lines) + "\n"


def _field_rows(schema: _Schema, prefix: str) -> list[str]:
    """One row per field; the fields of an inline object follow it, dotted (resources.cpu)."""
    rows = []
    for field, sub in schema.get("properties", {}).items():
        req = "yes" if field in schema.get("required", []) else ""
        rows.append(f"| `{prefix}{field}` | {_schema_text(sub)} | {req} | {_notes(sub)} |")
        if sub.get("type") == "object" and "properties" in sub:
            rows += _field_rows(sub, f"{prefix}{field}.")
    return rows


def _codes(resp: dict[str, Any]) -> str:
    schema = resp["content"]["application/json"]["schema"]["allOf"][1]
    codes = schema["properties"]["error"]["properties"]["code"]["enum"]
    return ", ".join(f"[`{c}`](#errors)" for c in codes)


def _key(security: list) -> str:
    return "no" if not security else "yes" if {} not in security else "unless `GANTRY_METRICS_PUBLIC=1`"


def _schema_text(s: _Schema) -> str:
    """A schema in a few words: `Spec`, integer 1..10000, string or null ..."""
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in s:
        return " or ".join(_schema_text(x) for x in s["anyOf"])
    if "allOf" in s:
        return " and ".join(_schema_text(x) for x in s["allOf"])
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    if "enum" in s:
        return "one of " + ", ".join(f"`{v}`" for v in s["enum"])
    kind = s.get("type")
    if kind is None:
        return "any"
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"array of {_schema_text(s['items'])}"
    if kind == "object" and "properties" in s:
        return "object {" + ", ".join(f"`{k}`" for k in s["properties"]) + "}"
    if kind == "object" and isinstance(s.get("additionalProperties"), dict):
        return f"object of {_schema_text(s['additionalProperties'])}"
    text = kind
    if "minimum" in s or "maximum" in s:
        text += f" {s.get('minimum', '')}..{s.get('maximum', '')}"
    if "pattern" in s:
        text += f" matching `{s['pattern']}`"
    return text.replace("|", "\\|")


def _notes(s: _Schema) -> str:
    return s.get("description", "").replace("|", "\\|")

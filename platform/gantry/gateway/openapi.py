"""The gateway's HTTP API as an OpenAPI 3.1 document, written by hand as data.

This is the reference: ``GET /v1/openapi.json`` serves it (no key: it describes the API,
it discloses nothing deployed), ``docs/api.md`` is rendered from it (``render_markdown``;
``scripts/render_api.py`` writes the file and a test checks that the committed one is
current), and tests check that every route the app serves is here and the other way round,
and fuzz every operation against a real gateway (schemathesis), checking each answer
against the schemas below.

Bounds come from where they are enforced (``manifest``'s MAX_* constants, ``admin``'s
limits, ``state``'s instance states), so the document cannot drift from the validation;
error codes per status are in ``ERRORS``, the one table the responses are built from.
"""
from __future__ import annotations

import json
from typing import Any

from gantry_runtime import wire
from gantry_runtime.wire import ErrorCode

from .. import state
from ..manifest import (MAX_BODY, MAX_CONCURRENCY, MAX_CPU, MAX_DURATION, MAX_GPU, MAX_INSTANCES, MAX_MEMORY,
                        MIN_MEMORY, NAME_RE, RUNTIMES)
from ..quantities import format_size
from .admin import MAX_JSON_DEPTH, MAX_LOG_ENTRIES

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
    sections = {
        "resources": {
            "cpu": num("number", 0.01, MAX_CPU, "cores: the container's CPU quota (default 0.5)"),
            "cpu_request": num("number", 0, MAX_CPU, "cores placement reserves (0, the default: the same as cpu)"),
            "memory": size(MAX_MEMORY, f"memory limit, at least {format_size(MIN_MEMORY)} (default 512Mi)",
                           MIN_MEMORY),
            "gpu": num("integer", 0, MAX_GPU, "whole GPUs (default 0)"),
        },
        "scaling": {
            "min_instances": num("integer", 0, MAX_INSTANCES, "instances kept ready (default 0: scale to zero)"),
            "max_instances": num("integer", 1, MAX_INSTANCES, "default 10"),
            "concurrency": num("integer", 1, MAX_CONCURRENCY, "requests in flight per instance (default 4)"),
            "idle_timeout": duration("how long demand is remembered before scaling down (default 60s)"),
            "keep_paused": duration("how long a scaled-down instance stays paused (default 5m; 0: stopped)"),
        },
        "limits": {
            "timeout": duration("per invocation, above zero (default 30s)"),
            "max_body": size(MAX_BODY, "request body limit (default 0: the gateway's GANTRY_MAX_BODY)"),
        },
    }
    props: dict[str, _Schema] = {
        "name": _NAME,
        "handler": {"type": "string", "pattern": wire.HANDLER_RE.pattern, "description": wire.HANDLER_EXPECTED},
        "runtime": {"enum": list(RUNTIMES), "description": "default python3.11"},
        **{section: _obj(fields, [] if written else None) for section, fields in sections.items()},
        "env": {"type": "object", "additionalProperties": env_value,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "not": {"pattern": "^GANTRY_"}},
                "description": "environment variables of the function (names starting with GANTRY_ are reserved)"},
    }
    return _obj(props, ["name", "handler"] if written else None)


SCHEMAS: dict[str, _Schema] = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}})},
                  description="Every error the gateway answers, and every error of the runtime it passes on"),
    "SpecInput": _spec(written=True),
    "Spec": _spec(written=False),
    "DeployRequest": _obj({"spec": _ref("SpecInput"),
                           "image": {"type": "string", "minLength": 1, "pattern": r"\S",
                                     "description": "the image reference `gantry build` made"}}),
    "Deployed": _obj({"name": _NAME, "version": {"type": "integer", "minimum": 1},
                      "active": {"type": "integer", "minimum": 1,
                                 "description": "the version taking traffic (the new one once it is ready)"}}),
    "FunctionSummary": _obj({
        "name": _NAME,
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
        "error": _nullable({"type": "string", "description": "why the stored record cannot be read"}),
    }),
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
        **{part: _obj({"cpu": {"type": "integer", "description": "millicores"},
                       "memory": {"type": "integer", "description": "bytes"}}, description=what)
           for part, what in (("capacity", "what the node has"),
                              ("allocatable", "what placement may reserve (CPU overcommitted)"),
                              ("allocated", "reserved by the instances placed there"),
                              ("used", "really in use now (the whole node)"))},
        "instances": {"type": "integer", "minimum": 0}, "states": _COUNTS,
    }),
}
SCHEMAS["Function"] = _obj({**SCHEMAS["FunctionSummary"]["properties"],   # the summary, and:
                           "spec": _nullable(_ref("Spec")), "active_spec": _nullable(_ref("Spec")),
                           "instances": {"type": "array", "items": _ref("Instance")}})

# (status, code, when): the gateway's errors.  Each operation lists the statuses it may answer;
# its response for a status allows the codes of that status here that apply to it (INVOKE_ONLY
# codes only on invoke).  A 500 `internal` is a bug in the gateway: no operation lists it.
ERRORS: list[tuple[int, str, str]] = [
    (400, ErrorCode.BAD_REQUEST, "a malformed body, query or header (a bad spec names the field); an admin body "
     f"that is not UTF-8 JSON, nests deeper than {MAX_JSON_DEPTH} levels or holds a number that is not finite or "
     "beyond 2**63-1; an invoke body sent as JSON that is not (the runtime's 400, passed on); a request line or "
     "header the HTTP parser rejects"),
    (401, "unauthorized", "no bearer key, or an unknown one (`WWW-Authenticate: Bearer`)"),
    (403, ErrorCode.FORBIDDEN, "an admin operation without the admin key"),
    (404, ErrorCode.NOT_FOUND, "no such function (or route)"),
    (405, "method_not_allowed", "a method the path does not serve (`Allow` lists those it does)"),
    (413, ErrorCode.TOO_LARGE, "the body is over the limit, whatever Content-Length said: for invoke the function's "
     "`[limits] max_body`, else the gateway's `GANTRY_MAX_BODY` (the message names which); for admin calls "
     "`GANTRY_MAX_BODY`"),
    (429, "rate_limited", "over the key's rate limit (or the client address's wrong-key limit); `Retry-After` in "
     "whole seconds, the message gives the exact wait"),
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
]
INVOKE_ONLY = {ErrorCode.FUNCTION_ERROR, ErrorCode.BAD_RESULT, "function_crashed",
               ErrorCode.FUNCTION_OUTCOME_UNKNOWN, "no_capacity", ErrorCode.TIMEOUT}
INTERNAL = (500, "internal", "a bug in the gateway (logged with its traceback; the caller gets no detail)")

_RETRY_AFTER = {"Retry-After": {"description": "whole seconds to wait", "required": True,
                                "schema": {"type": "string", "pattern": r"^\d+$"}}}
_STATUS_HEADERS = {401: {"WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}}},
                   405: {"Allow": {"required": True, "schema": {"type": "string"}}},
                   429: _RETRY_AFTER, 503: _RETRY_AFTER}
_INVOCATION_ID = {"description": "the invocation's id (also in the function's log lines)",
                  "schema": {"type": "string"}}


def _error(status: int, invoke: bool) -> dict[str, Any]:
    codes = [(code, when) for s, code, when in ERRORS if s == status and (invoke or code not in INVOKE_ONLY)]
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
        security: bool | None = True, invoke: bool = False) -> dict[str, Any]:
    """One operation; SECURITY True: the bearer key, False: none, None: optional."""
    out: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = body
    out["responses"] = {**{str(s): r for s, r in ok.items()},
                        **{str(s): _error(s, invoke) for s in sorted(errors)}}
    out["security"] = {True: [{"bearer": []}], False: [], None: [{"bearer": []}, {}]}[security]
    return out


_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": _NAME,
               "description": "the function's name (any other name is 404)"}
def _body(schema: _Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


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


PATHS: dict[str, dict[str, Any]] = {
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
        (400, 401, 404, 413, 429, 500, 502, 503, 504),
        description=_INVOKE_DESCRIPTION, invoke=True,
        params=[_NAME_PARAM, {"name": wire.TIMEOUT, "in": "header", "required": False,
                              "schema": {"type": "string"},
                              "description": "seconds, a positive number: lowers the function's timeout "
                                             "(never raises it); anything else is 400"}],
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
                                "unit, and `runtime = \"vllm\"` needs `resources.gpu` of at least 1."),
        "get": _op("listFunctions", "functions", "List functions",
                   {200: _json(_obj({"functions": {"type": "array", "items": _ref("FunctionSummary")}}),
                               "every deployed function, by name")}, _ADMIN_ERRORS),
    },
    "/v1/functions/{name}": {
        "get": _op("getFunction", "functions", "A function, its specs and its instances",
                   {200: _json(_ref("Function"), "the function")}, (404, *_ADMIN_ERRORS), params=[_NAME_PARAM]),
        "delete": _op("deleteFunction", "functions", "Delete a function (its instances are drained)",
                      {200: _json(_obj({"name": _NAME, "deleted": {"const": True}}), "deleted")},
                      (404, *_ADMIN_ERRORS), params=[_NAME_PARAM]),
    },
    "/v1/functions/{name}/scale": {"post": _op(
        "scaleFunction", "functions", "Keep at least N instances ready (`gantry scale`)",
        {200: _json(_obj({"name": _NAME, "min_instances": {"type": "integer", "minimum": 0}}), "the new floor")},
        (400, 404, 413, *_ADMIN_ERRORS), params=[_NAME_PARAM],
        description="`min_instances` above the latest version's `scaling.max_instances` is 400.",
        body=_body(_obj({"min_instances": {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES,
                                           "description": "at most the latest version's scaling.max_instances"}},
                        closed=False)))},
    "/v1/functions/{name}/logs": {"get": _op(
        "functionLogs", "functions", "The function's container logs, oldest first, after a cursor",
        {200: _json(_obj({"name": _NAME, "entries": {"type": "array", "items": _ref("LogEntry")},
                          "cursor": _nullable({"type": "string", "description": "pass as `after` for the next "
                                                                                "page"})}),
                    "up to `limit` entries (none for a name that was never deployed)")},
        (400, 404, *_ADMIN_ERRORS),
        params=[_NAME_PARAM,
                {"name": "after", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": r"^(\d{1,20}(-\d{1,20})?)?$"},
                 "description": "a cursor: a Redis stream id such as 1700000000000-0 (each part at most "
                                "2**64-1); absent or empty: from the oldest entry kept"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOG_ENTRIES, "default": 100}}])},
    "/v1/nodes": {"get": _op(
        "listNodes", "nodes", "Live worker nodes, their capacity and what is placed on them",
        {200: _json(_obj({"nodes": {"type": "array", "items": _ref("Node")}}), "the nodes whose heartbeat is live")},
        _ADMIN_ERRORS)},
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
        description="Needs the admin key unless the gateway runs with `GANTRY_METRICS_PUBLIC=1`.")},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Gantry HTTP API",
        "version": API_VERSION,
        "description": "The gateway's API: invoke functions, and the admin API that deploys, scales and "
                       "inspects them. Every call under /v1 but this document needs `Authorization: Bearer KEY`. "
                       "Every error is JSON `{\"error\": {\"code\", \"message\"}}`; the codes each status may "
                       f"carry are listed per operation. A 500 `{INTERNAL[1]}` is {INTERNAL[2]}, listed on no "
                       "operation.",
    },
    "tags": [{"name": "invoke", "description": "calling functions"},
             {"name": "functions", "description": "the admin API: functions (the admin key)"},
             {"name": "nodes", "description": "the admin API: worker nodes (the admin key)"},
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

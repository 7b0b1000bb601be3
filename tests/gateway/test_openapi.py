"""The OpenAPI document (gateway/openapi.py) is the whole API and only the API: every route the
gateway serves is in it and the other way round; it is served without a key; docs/api.md is
rendered from it; and a bounded schemathesis run against a real gateway (a subprocess on
loopback, real Redis, a deployed function backed by a real runtime process) finds every
answer documented: its status, content type, headers and body schema, and no 5xx that the
operation does not list (a 500 ``internal`` is never documented, so it always fails)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gantry.gateway import coord_api, openapi
from gantry.gateway.settings import GatewaySettings
from gantry.gateway.app import create_app
from gantry.up import free_port

from .support import ADMIN_HASH, AUTH, ROOT, Runtime, add_instance, gateway, register_function

FUNCTION_DIR = Path(__file__).parent / "functions" / "anybody"
FN = "anybody"                  # the deployed function half the fuzzed calls are pointed at
MAX_EXAMPLES = 25               # per operation; with no shrinking, the run is bounded
# The long polls (lock wait, queue get, watch) accept waits up to coord_api.MAX_WAIT, as the
# document says; a generated wait is cut to this so the run stays bounded (a wait outside
# the range is left as it is: that is a 400 to check, answered at once).
LONG_POLLS = {"POST /v1/coord/lock/acquire": ("body", "wait"), "POST /v1/coord/queue/get": ("body", "timeout"),
              "GET /v1/coord/watch": ("query", "timeout")}
LONGEST_WAIT = 0.05
# The admin key goes with every generated request unless the case itself leaves it out or
# spoils it (then 401 is what the document promises).  Unknown query parameters are ignored
# by the API, as HTTP APIs do, so none is generated.
CONFIG = schemathesis.Config.from_dict({"headers": AUTH, "generation": {"allow-extra-parameters": False}})
SCHEMA = schemathesis.openapi.from_dict(openapi.DOCUMENT, config=CONFIG)


def _served_routes(app) -> set[tuple[str, str]]:
    """(METHOD, path) of every route; the HEAD that aiohttp adds beside each GET is not one of ours."""
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def _documented_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in openapi.DOCUMENT["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_route_is_served():
    app = create_app(GatewaySettings(redis_url="redis://127.0.0.1:1/0"))
    assert _served_routes(app) == _documented_routes()


def test_every_documented_error_code_is_one_the_error_table_lists():
    listed = {(status, str(code)) for status, code, _ in openapi.ERRORS}
    for path, item in openapi.DOCUMENT["paths"].items():
        for method, op in item.items():
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    schema = resp["content"]["application/json"]["schema"]["allOf"][1]
                    codes = schema["properties"]["error"]["properties"]["code"]["enum"]
                    assert codes and all((int(status), c) in listed for c in codes), (path, method, status)
                    assert "internal" not in codes


def test_docs_api_md_is_rendered_from_the_document():
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert committed == openapi.render_markdown(), "docs/api.md is out of date: run scripts/render_api.py"


async def test_the_document_is_served_without_a_key(redis_url, redis_client):
    async with gateway(redis_url, metrics_public=False) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
            resp = await client.get(openapi.PATH, headers=headers)
            assert resp.status == 200 and resp.content_type == "application/json"
            assert await resp.json() == json.loads(json.dumps(openapi.DOCUMENT))
        assert (await client.get("/v1/nodes")).status == 401       # the rest of /v1 still needs it


# -- the fuzz run --------------------------------------------------------------------------

STATS: dict[str, Counter] = {"operations": Counter(), "examples": Counter(), "statuses": Counter(),
                             "failures": Counter()}


class Gateway:
    """``python -m gantry.gateway`` on a free loopback port, configured as an operator would."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "gateway.log"
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'runtime'}",
               "GANTRY_REDIS_URL": redis_url, "GANTRY_ADMIN_KEY_HASH": ADMIN_HASH,
               "GANTRY_GATEWAY_PORT": str(self.port), "GANTRY_COLD_START_TIMEOUT": "1s",
               # no rate limit: the fuzzer's pace is not what is under test
               "GANTRY_RATE_LIMIT": "0", "GANTRY_ADMIN_RATE_LIMIT": "0", "GANTRY_AUTH_FAILURE_RATE": "0"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gantry.gateway"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise AssertionError(f"gateway not up: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def live(tmp_path_factory, redis_url, request):
    tmp = tmp_path_factory.mktemp("openapi")
    runtime = Runtime(tmp, "main:describe", GANTRY_CODE_DIR=str(FUNCTION_DIR), GANTRY_FUNCTION=FN).wait_ready()
    streamer = Runtime(tmp, "main:stream", GANTRY_CODE_DIR=str(FUNCTION_DIR), GANTRY_FUNCTION="streamer")
    gw = Gateway(tmp, redis_url)
    streamer.wait_ready()
    yield gw, runtime, streamer
    gw.stop()
    runtime.stop()
    streamer.stop()
    report = request.config.pluginmanager.get_plugin("terminalreporter")
    if report is not None and STATS["examples"]:
        ops = [k for k in STATS["examples"] if k != "probes"]
        report.write_line("")
        report.write_line(f"schemathesis: {len(ops)} operations, {sum(STATS['examples'][k] for k in ops)} "
                          f"examples, {STATS['examples']['probes']} probes of unserved methods; "
                          f"failures: {dict(STATS['failures']) or 'none'}")
        for op in ops:
            statuses = {s: n for (o, s), n in sorted(STATS["statuses"].items()) if o == op}
            report.write_line(f"  {op}: {statuses}")
        report.write_line(f"  probes: {({s: n for (o, s), n in STATS['statuses'].items() if o == 'probes'})}")
    text = gw.log.read_text()
    assert "unhandled error" not in text, text[-4000:]


@pytest.fixture
def deployed(live, redis_client):
    """The function and its ready instance, written afresh for each operation's run (a fuzzed
    DELETE may remove it; redis_client empties the database around each test)."""
    gw, runtime, _ = live
    register_function(redis_client, FN)
    add_instance(redis_client, FN, runtime.port)
    return gw, redis_client, runtime


# not_a_server_error: replaced by the check in the test (a documented 502 is an answer, not a
# bug); positive_data_acceptance: the admin API's rules between fields and against stored state
# (min_instances <= max_instances, cpu_request <= cpu, memory >= 6Mi in any unit) are beyond
# JSON Schema, so schema-valid data may rightly be 400; the operations' descriptions say so.
EXCLUDED = [not_a_server_error, positive_data_acceptance]


@SCHEMA.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck), database=None)
@pytest.mark.timeout(120)
def test_fuzz_every_operation(case, deployed):
    gw, r, runtime = deployed
    label = f"{case.method} {case.path}"
    probe = label != case.operation.label       # a method the path does not serve, probed
    STATS["examples"]["probes" if probe else label] += 1
    if "name" in (case.path_parameters or {}) and STATS["examples"][label] % 2 == 0:
        case.path_parameters["name"] = FN
        if not r.exists(f"fn:{FN}"):        # a fuzzed DELETE took it: put it back
            register_function(r, FN)
            add_instance(r, FN, runtime.port)
    _bound_wait(case, label)
    response = case.call(base_url=gw.url, timeout=15)
    STATS["statuses"][("probes" if probe else label, response.status_code)] += 1
    try:
        if response.status_code >= 500:
            documented = case.operation.definition.raw["responses"]
            assert str(response.status_code) in documented, (
                f"undocumented {response.status_code} from {label}: {response.text[:300]}")
        # headers: the key came from the configuration, not the generator (ignored_auth then
        # checks that the same call without it, and with a wrong one, is refused)
        case.validate_response(response, excluded_checks=EXCLUDED, headers=AUTH,
                               transport_kwargs={"base_url": gw.url, "timeout": 15})
    except BaseException as exc:
        for failure in getattr(exc, "exceptions", None) or [exc]:
            STATS["failures"][getattr(failure, "title", None) or type(failure).__name__] += 1
        raise


def _bound_wait(case, label: str) -> None:
    where, field = LONG_POLLS.get(label, (None, None))
    data = case.body if where == "body" else case.query if where == "query" else None
    if not isinstance(data, dict) or field not in data:
        return
    try:
        value = float(data[field]) if not isinstance(data[field], bool) else None
    except (TypeError, ValueError):
        return
    if value is not None and LONGEST_WAIT < value <= coord_api.MAX_WAIT:
        data[field] = LONGEST_WAIT


# -- answers the fuzzer cannot reach on its own, recorded and checked the same way ------------


def _scenario(kind: str, r, runtime, streamer) -> tuple[str, object, dict]:
    """Sets the function up for one answer; returns (function, JSON body, headers)."""
    if kind == "stream":
        register_function(r, "streamer")
        add_instance(r, "streamer", streamer.port)
        return "streamer", {}, {}
    if kind == "function_error":
        return FN, {"__raise": "boom"}, {}
    if kind == "timeout":
        return FN, {"__sleep": 2}, {"X-Gantry-Timeout": "0.2"}
    if kind == "function_crashed":          # its only instance refuses connections
        register_function(r, "gone")
        add_instance(r, "gone", free_port())
        return "gone", {}, {}
    if kind == "no_capacity":               # no instance, no scheduler: the cold-start wait runs out
        register_function(r, "idle")
        return "idle", {}, {}
    if kind == "too_large":
        register_function(r, "small", limits={"max_body": "1Ki"})
        return "small", {"pad": "x" * 2000}, {}
    raise AssertionError(kind)


def _until_known(gw: Gateway, name: str) -> None:
    """Until the gateway's cache has the function (one the fuzzer deleted stays unknown to it
    for up to a second, its cache refresh interval)."""
    end = time.monotonic() + 5
    while True:
        request = urllib.request.Request(f"{gw.url}/v1/invoke/{name}", data=b"{}", headers=AUTH)
        try:
            urllib.request.urlopen(request, timeout=5).close()
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > end:
                return
        time.sleep(0.1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind, status", [("stream", 200), ("function_error", 500), ("timeout", 504),
                                          ("function_crashed", 502), ("no_capacity", 503),
                                          ("too_large", 413)])
def test_recorded_invoke_answers_match_the_document(kind, status, live, deployed):
    gw, runtime, streamer = live
    _, r, _ = deployed
    name, body, headers = _scenario(kind, r, runtime, streamer)
    _until_known(gw, name)
    case = SCHEMA["/v1/invoke/{name}"]["POST"].Case(path_parameters={"name": name}, body=body,
                                                    media_type="application/json", headers={**AUTH, **headers})
    response = case.call(base_url=gw.url, timeout=15)
    assert response.status_code == status, response.text
    if kind == "stream":
        assert response.headers["x-gantry-stream"] == ["1"]           # (lower-case names, lists of values)
        assert response.headers["transfer-encoding"] == ["chunked"]
        assert response.headers["content-type"][0].startswith("application/x-ndjson")
        assert [json.loads(line) for line in response.text.splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
    else:
        assert response.json()["error"]["code"] == kind
    case.validate_response(response, excluded_checks=EXCLUDED, headers=AUTH,
                           transport_kwargs={"base_url": gw.url, "timeout": 15})

"""The malformed-input run: the hostile requests of tests/gateway/test_hostile_input.py
(CASES, by the same names) and tests/gateway/test_hardening.py (MALFORMED; key guessing;
/metrics without a key), plus a few front-door cases, sent at a live gateway of a platform
running as separate processes, with the function deployed and a ready instance.  Counted:
answers by status, every 5xx, every answer that is not the expected one, every error answer
that is not the JSON error body, and the handler's side effects (only the one good request
may reach it).  tests/bench/test_faults_quick.py checks that every case of those two test
files is here."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

DEEP = 100_000
NESTED_ARRAYS = b"[" * DEEP + b"]" * DEEP
NESTED_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP
JSON = {"Content-Type": "application/json"}
MAX_U64 = 2**64 - 1
NAME = "hostile"

# test_hardening.MALFORMED: sent raw on a fresh connection
MALFORMED = {
    "request line": b"GE<T /x<script> HTTP/1.1\r\nHost: x\r\n\r\n",
    "header": b"GET /healthz HTTP/1.1\r\nHo\x01st: <script>\r\n\r\n",
    "huge header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"<script>" * 4000 + b"\r\n\r\n",
}
GUESSES = 15          # wrong keys sent in a row (test_hardening's key guessing, bounded)


def cases(spec: dict, image: str, good_tag: str) -> list[tuple[str, str, str, bytes | None, dict, set[int]]]:
    """(what, method, path, body, headers, expected statuses): test_hostile_input.CASES with
    the deployed function's own spec where a deploy body needs one."""
    def spec_with(section: str, field: str, raw: str) -> bytes:
        s = json.loads(json.dumps(spec))
        s["name"] = NAME
        s.setdefault(section, {})[field] = "@@"
        return json.dumps({"spec": s, "image": image}).replace('"@@"', raw).encode()

    def scale(raw: str) -> bytes:
        return b'{"min_instances": ' + raw.encode() + b"}"

    charset = json.dumps({"spec": {**spec, "name": "hostile-charset",
                                   "scaling": {**spec["scaling"], "min_instances": 0}}, "image": image}).encode()
    inv, fns = f"/v1/invoke/{NAME}", f"/v1/functions/{NAME}"
    good = json.dumps({"tag": good_tag}).encode()
    return [
        ("deploy: arrays nested 100000 deep", "POST", "/v1/functions", NESTED_ARRAYS, JSON, {400}),
        ("deploy: spec nested 100000 deep", "POST", "/v1/functions",
         b'{"image": "img:1", "spec": ' + NESTED_OBJECTS + b"}", JSON, {400}),
        ("deploy: spec nested 200 deep (parses)", "POST", "/v1/functions",
         b'{"image": "img:1", "spec": ' + b"[" * 200 + b"]" * 200 + b"}", JSON, {400}),
        ("deploy: cpu NaN", "POST", "/v1/functions", spec_with("resources", "cpu", "NaN"), JSON, {400}),
        ("deploy: cpu Infinity", "POST", "/v1/functions", spec_with("resources", "cpu", "Infinity"), JSON, {400}),
        ("deploy: cpu -Infinity", "POST", "/v1/functions", spec_with("resources", "cpu", "-Infinity"), JSON, {400}),
        ("deploy: cpu 1e400", "POST", "/v1/functions", spec_with("resources", "cpu", "1e400"), JSON, {400}),
        ("deploy: max_instances 2**70", "POST", "/v1/functions",
         spec_with("scaling", "max_instances", str(2**70)), JSON, {400}),
        ("deploy: concurrency 10**30", "POST", "/v1/functions",
         spec_with("scaling", "concurrency", str(10**30)), JSON, {400}),
        ("deploy: memory 2**70 bytes", "POST", "/v1/functions", spec_with("resources", "memory", str(2**70)), JSON,
         {400}),
        ("deploy: timeout 10**30", "POST", "/v1/functions", spec_with("limits", "timeout", str(10**30)), JSON, {400}),
        ("deploy: invalid UTF-8", "POST", "/v1/functions", b'{"image": "\xff\xfe"}', JSON, {400}),
        ("deploy: unknown charset (JSON is UTF-8)", "POST", "/v1/functions", charset,
         {"Content-Type": "application/json; charset=no-such-charset"}, {201}),
        ("scale: nested 100000 deep", "POST", f"{fns}/scale", NESTED_OBJECTS, JSON, {400}),
        ("scale: 2**70", "POST", f"{fns}/scale", scale(str(2**70)), JSON, {400}),
        ("scale: 10**30", "POST", f"{fns}/scale", scale(str(10**30)), JSON, {400}),
        ("scale: NaN", "POST", f"{fns}/scale", scale("NaN"), JSON, {400}),
        ("scale: Infinity", "POST", f"{fns}/scale", scale("Infinity"), JSON, {400}),
        ("scale: -Infinity", "POST", f"{fns}/scale", scale("-Infinity"), JSON, {400}),
        ("scale: 1e400", "POST", f"{fns}/scale", scale("1e400"), JSON, {400}),
        ("scale: -1", "POST", f"{fns}/scale", scale("-1"), JSON, {400}),
        ("logs: after 2**64-0", "GET", f"{fns}/logs?after={2**64}-0", None, {}, {400}),
        ("logs: after seq 2**64", "GET", f"{fns}/logs?after=1-{2**64}", None, {}, {400}),
        ("logs: after 10**22", "GET", f"{fns}/logs?after={10**22}", None, {}, {400}),
        ("logs: after the last id there is", "GET", f"{fns}/logs?after={MAX_U64}-{MAX_U64}", None, {}, {200}),
        ("logs: after superscript two", "GET", f"{fns}/logs?after=%C2%B2-0", None, {}, {400}),
        ("logs: after Arabic-Indic digits", "GET", f"{fns}/logs?after=%D9%A1%D9%A2-0", None, {}, {400}),
        ("logs: limit 2**100", "GET", f"{fns}/logs?limit={2**100}", None, {}, {400}),
        ("logs: limit NaN", "GET", f"{fns}/logs?limit=NaN", None, {}, {400}),
        ("logs: limit 1_0", "GET", f"{fns}/logs?limit=1_0", None, {}, {400}),
        ("logs: limit Arabic-Indic ten", "GET", f"{fns}/logs?limit=%D9%A1%D9%A0", None, {}, {400}),
        ("invoke: arrays nested 100000 deep", "POST", inv, NESTED_ARRAYS, JSON, {400}),
        ("invoke: objects nested 100000 deep", "POST", inv, NESTED_OBJECTS, JSON, {400}),
        ("invoke: X-Gantry-Timeout 1e400", "POST", inv, good, {**JSON, "X-Gantry-Timeout": "1e400"}, {400}),
        ("invoke: X-Gantry-Timeout NaN", "POST", inv, good, {**JSON, "X-Gantry-Timeout": "NaN"}, {400}),
        ("invoke: a good request still works", "POST", inv, good, JSON, {200}),
        # the front door, beyond the two test files
        ("front door: no Authorization header", "POST", inv, good, {**JSON, "Authorization": ""}, {401}),
        ("front door: unknown function", "POST", "/v1/invoke/no-such-function", b"{}", JSON, {404}),
        ("front door: body of 6 MiB + 1", "POST", inv, b"x" * (6 * 2**20 + 1), JSON, {413}),
        ("front door: /metrics without a key", "GET", "/metrics", None, {"Authorization": ""}, {401}),
    ]


def error_body_problem(status: int, content_type: str, raw: bytes) -> str | None:
    """Why an error answer is not the documented JSON error body (None when it is)."""
    if status < 400:
        return None
    if not content_type.startswith("application/json"):
        return f"Content-Type {content_type!r}"
    try:
        err = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return f"body {raw[:80]!r}"
    if not isinstance(err.get("code"), str) or not isinstance(err.get("message"), str):
        return f"error {err!r}"[:120]
    if "Traceback" in err["message"]:
        return "a traceback in the message"
    return None


def _code(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


async def _raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


async def _send_all(port: int, api_key: str, spec: dict, image: str, good_tag: str) -> list[dict]:
    """Every case, each on a fresh connection (as a hostile client would send it; a connection
    the gateway closed after one answer is never reused)."""
    import aiohttp

    out: list[dict] = []

    def note(what: str, source: str, expected: set[int], status: int, ctype: str, raw: bytes) -> None:
        problem = error_body_problem(status, ctype, raw) if status else f"no answer: {raw[:160]!r}"
        out.append({"what": what, "source": source, "expected": sorted(expected), "status": status,
                    "code": _code(raw) if status >= 400 else "", "as_expected": status in expected and not problem,
                    "problem": problem})

    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def send(method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, str, bytes]:
            try:
                async with session.request(method, f"http://127.0.0.1:{port}{path}", data=body,
                                           headers=headers) as resp:
                    return resp.status, resp.headers.get("Content-Type", ""), await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return 0, "", repr(exc).encode()

        auth = {"Authorization": f"Bearer {api_key}"}
        for what, method, path, body, headers, expected in cases(spec, image, good_tag):
            hdrs = {k: v for k, v in {**auth, **headers}.items() if v != ""}     # "": header left out
            source = "front door" if what.startswith("front door") else "test_hostile_input"
            note(what, source, expected, *await send(method, path, body, hdrs))
        for kind, data in MALFORMED.items():
            try:
                status, ctype, raw = await _raw(port, data)
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
                status, ctype, raw = 0, "", repr(exc).encode()
            note(f"malformed {kind}", "test_hardening", {400}, status, ctype, raw)
        # last: wrong keys hold this address (then even the right key is refused for a while)
        for i in range(GUESSES):
            note(f"key guessing: wrong key {i + 1}", "test_hardening", {401, 429},
                 *await send("GET", "/v1/functions", None, {"Authorization": f"Bearer gk_guess_{i}"}))
    return out


def run(stack, capture, spec: dict, image: str) -> dict:
    """On a started stack with LogCapture running: deploy, wait for a ready instance, send every
    case, count."""
    good_tag = f"hostile-{stack.run_id}"
    s = {**spec, "name": NAME}
    stack.deploy(s, image)
    stack.wait(f"{NAME} ready", lambda: stack.ready_instances(NAME) or None, 90, every=0.1)
    t = time.monotonic()
    answers = asyncio.run(_send_all(stack.port, stack.api_key, spec, image, good_tag))
    took = time.monotonic() - t
    time.sleep(1.0)                                     # the last log lines reach Docker
    capture.collect()
    effects = capture.side_effects()
    statuses = Counter(a["status"] for a in answers)
    return {
        "sent": len(answers),
        "seconds": round(took, 2),
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
        "count_5xx": sum(v for k, v in statuses.items() if 500 <= k < 600),
        "unexpected": [a for a in answers if not a["as_expected"]],
        "side_effects": dict(effects),
        "good_request_side_effects": effects.get(good_tag, 0),
        "other_side_effects": sum(v for k, v in effects.items() if k != good_tag),
        "answers": answers,
        "capture": capture.summary(),
    }

"""Warm-path cost of observability (docs/metrics.md, docs/tracing.md): four extra gateway
processes with the same settings in front of the same warm container: (a) metrics and tracing
off, the baseline; (b) metrics on, tracing off, the default; (c) metrics on and 1 % of traces
exported; (d) metrics on and every trace exported (OTLP/HTTP to a sink in this process).
wrk at 1 and 64 connections, the four interleaved per round (the order rotating).  Each
"added" figure is the median over rounds of the paired ratio against (a) (same round, same
neighbours).  A full run also counts each setting's instructions per request under valgrind's
callgrind (gantry.bench.instructions), a figure that does not move with the machine's load."""
from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import functions, instructions, loadgen
from .stack import GATEWAY_ENV, BenchError
from .stats import summary
from ..up import free_port

NAME = "bench-observed"
BODY = '{"msg": "hello", "n": 1}'
CONCURRENCY = (1, 64)
BASELINE = "off"
# mode -> (GANTRY_METRICS, GANTRY_TRACE_SAMPLE_RATIO or None for tracing off)
MODES = {"off": ("0", None), "metrics": ("1", None), "metrics_trace_1pct": ("1", "0.01"),
         "metrics_trace_all": ("1", "1")}
LABELS = {"off": "(a) metrics off, tracing off (baseline)", "metrics": "(b) metrics on, tracing off (the default)",
          "metrics_trace_1pct": "(c) metrics on, tracing at ratio 0.01",
          "metrics_trace_all": "(d) metrics on, tracing at ratio 1"}
GOAL = 0.05      # at most 5 % added gateway CPU per request over (a), for (b) and (c)
GOAL_MODES = ("metrics", "metrics_trace_1pct")
COUNTED = 600            # requests counted per setting under callgrind (after WARMUP uncounted)
WARMUP = 200


class Sink:
    """An OTLP/HTTP receiver that accepts and counts export requests (200, empty body)."""

    def __init__(self) -> None:
        sink = self
        self.requests = self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-sink", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _healthy(port: int) -> bool:
    from ..sdk import Client, GantryError

    try:
        return Client(f"http://127.0.0.1:{port}", "").health(timeout=1)["status"] == "ok"
    except (GantryError, OSError):
        return False


def measure(ctx) -> dict:
    stack, quick = ctx.stack, ctx.quick
    duration = 1 if quick else 3
    rounds = 3 if quick else 5
    functions.deploy_warm_echo(ctx, NAME, "observed")
    sink = Sink()
    ctx.cleanups.append(sink.stop)
    modes = list(MODES)
    ports = {}
    for mode in MODES:
        ports[mode] = free_port()
        stack._spawn(f"gateway-obs-{mode}", "gateway", _env(mode, ports[mode], sink))
        ctx.cleanups.append(lambda m=mode: stack.stop_process(f"gateway-obs-{m}"))
    for mode in modes:
        stack.wait(f"the {mode} gateway", lambda m=mode: _healthy(ports[m]), 30)
    script = loadgen.write_script(stack.tmp)
    auth = f"Bearer {stack.api_key}"
    urls = {m: f"http://127.0.0.1:{ports[m]}/v1/invoke/{NAME}" for m in modes}
    pids = {m: stack.pid(f"gateway-obs-{m}") for m in modes}

    def one(mode: str, conns: int, seconds: float) -> dict:
        return loadgen.run_wrk_measuring(pids[mode], urls[mode], script, connections=conns, duration=seconds,
                                         body=BODY, auth=auth)

    for mode in modes:   # warm-up: connection pools, and the SDK's first export
        one(mode, 64, 1)
    runs: dict = {m: {c: [] for c in CONCURRENCY} for m in modes}
    done = 0
    for r in range(rounds):
        if r and not ctx.budget.ok(len(modes) * len(CONCURRENCY) * (duration + 1)):
            break
        for conns in CONCURRENCY:
            k = r % len(modes)
            for mode in modes[k:] + modes[:k]:
                runs[mode][conns].append(one(mode, conns, duration))
        done += 1
    if not sink.requests:
        raise BenchError("the traced gateways exported nothing to the sink")
    out: dict = {"function": {"name": NAME, "handler": "async JSON echo", "cpu": 2.0, "concurrency": 64},
                 "settings": {m: {"GANTRY_METRICS": v[0], "GANTRY_TRACE_SAMPLE_RATIO": v[1]} for m, v in MODES.items()},
                 "labels": LABELS, "baseline": BASELINE,
                 "exporter": "OTLP/HTTP protobuf, batched (SDK defaults), to a local sink",
                 "duration_s": duration, "rounds": done, "rounds_planned": rounds, "goal_added": GOAL,
                 "goal_modes": list(GOAL_MODES),
                 "exports": {"requests": sink.requests, "bytes": sink.bytes}}
    out["modes"], out["added"] = figures(runs)
    for mode in modes:           # the CPU-time gateways are done: the counted ones run alone
        stack.stop_process(f"gateway-obs-{mode}")
    out["instructions"] = ({"available": False, "why": "not part of a quick run"} if quick
                           else _instructions(ctx, sink, modes))
    stack.delete(NAME)
    return out


def _env(mode: str, port: int, sink: "Sink") -> dict[str, str]:
    metrics, ratio = MODES[mode]
    env = {**GATEWAY_ENV, "GANTRY_GATEWAY_PORT": str(port), "GANTRY_ASYNC_DISPATCH": "0",
           "GANTRY_GATEWAY_ID": f"bench-obs-{mode}", "GANTRY_METRICS": metrics}
    if ratio is not None:
        env.update(GANTRY_OTLP_ENDPOINT=sink.url, GANTRY_TRACE_SAMPLE_RATIO=ratio)
    return env


def _instructions(ctx, sink: "Sink", modes: list[str]) -> dict:
    """Each setting's gateway alone under callgrind: instructions per request over COUNTED
    requests, and what each adds over the baseline's."""
    stack = ctx.stack
    counted: dict = {}
    for mode in modes:
        port, name = free_port(), f"gateway-cg-{mode}"
        out_file = os.path.join(stack.tmp, f"callgrind-{mode}.out")
        try:
            stack._spawn(name, "gateway", _env(mode, port, sink), wrap=instructions.wrap(out_file))
        except instructions.Unavailable as exc:
            return {"available": False, "why": str(exc)}
        ctx.cleanups.append(lambda n=name: stack.stop_process(n))
        stack.wait(f"the {mode} gateway under callgrind", lambda p=port: _healthy(p), 300, every=0.5)
        send = instructions.sender(port, f"/v1/invoke/{NAME}", BODY.encode(),
                                   {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"})
        for _ in range(WARMUP):
            send()
        counted[mode] = instructions.count(stack.pid(name), out_file, send, COUNTED)
        stack.stop_process(name)
    base = counted[BASELINE]["per_request"]
    return {"available": True, "tool": "valgrind --tool=callgrind --instr-atstart=no (callgrind_control -i on, -d)",
            "requests": COUNTED, "warmup": WARMUP, "client": "one keep-alive connection, one request at a time",
            "modes": counted,
            "added": {m: round(counted[m]["per_request"] / base - 1, 4) for m in counted if m != BASELINE}}


def figures(runs: dict) -> tuple[dict, dict]:
    """RUNS: mode -> connections -> [one wrk run per round] (rounds in the same order for every
    mode).  Returns each mode's figures and, for every mode but the baseline, what it added
    over the baseline: per round (x - a) / a (req/s: 1 - x/a), then median and range."""
    modes: dict = {}
    for mode in runs:
        modes[mode] = {str(c): {
            "rps": summary([x["rps"] for x in runs[mode][c]], 1),
            "p50_ms": summary([x["p50_ms"] for x in runs[mode][c]], 3),
            "p99_ms": summary([x["p99_ms"] for x in runs[mode][c]], 3),
            "gateway_cpu_us_per_request": summary([_cpu_per_request(x) for x in runs[mode][c]], 1),
            "requests": sum(x["requests"] for x in runs[mode][c]),
            "errors": sum(x["errors"] for x in runs[mode][c]),
        } for c in runs[mode]}
    added: dict = {}
    for mode in runs:
        if mode == BASELINE:
            continue
        for conns in runs[mode]:
            pairs = list(zip(runs[BASELINE][conns], runs[mode][conns]))
            added.setdefault(mode, {})[str(conns)] = {
                "gateway_cpu_per_request": summary([
                    _cpu_per_request(b) / _cpu_per_request(a) - 1 for a, b in pairs
                    if _cpu_per_request(a) and _cpu_per_request(b)], 3),
                "rps_lost": summary([1 - b["rps"] / a["rps"] for a, b in pairs if a["rps"]], 3),
                "p50": summary([b["p50_ms"] / a["p50_ms"] - 1 for a, b in pairs if a["p50_ms"]], 3),
                "p99": summary([b["p99_ms"] / a["p99_ms"] - 1 for a, b in pairs if a["p99_ms"]], 3),
            }
    return modes, added


def _cpu_per_request(x: dict) -> float | None:
    """The gateway's CPU per answered request over one wrk run, µs."""
    if x["proxy_cpu_cores"] is None or not x["rps"]:
        return None
    return x["proxy_cpu_cores"] / x["rps"] * 1e6

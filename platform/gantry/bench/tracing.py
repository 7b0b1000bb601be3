"""Warm-path cost of tracing (docs/tracing.md): three extra gateway processes with the same
settings, one with tracing off, one exporting every span (sample ratio 1) and one sampling 1 %
of traces, over OTLP/HTTP to a sink in this process, in front of the same warm container; wrk at 1 and 64 connections,
the two interleaved per round.  Each figure is the median over rounds of the paired
difference (same round, same neighbours)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import functions, loadgen
from .stack import GATEWAY_ENV, BenchError
from .stats import summary
from ..up import free_port

NAME = "bench-traced"
BODY = '{"msg": "hello", "n": 1}'
CONCURRENCY = (1, 64)
MODES = ("off", "on", "on_1pct")   # on_1pct: GANTRY_TRACE_SAMPLE_RATIO=0.01
RATIOS = {"on": "1", "on_1pct": "0.01"}
GOAL = 0.05      # at most 5 % added (p50 latency at 1 connection; gateway CPU per request at 64)


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
    directory = functions.write_echo(ctx.fn_dir, NAME, "traced", cpu=2.0, min_instances=1, max_instances=1,
                                     concurrency=64)
    result = functions.build(ctx.docker, directory)
    stack.deploy(functions.spec_dict(result), result.image)
    stack.wait(f"a ready {NAME} instance", lambda: stack.ready_instances(NAME), 90)
    sink = Sink()
    ctx.cleanups.append(sink.stop)
    ports = {}
    for mode in MODES:
        ports[mode] = free_port()
        env = {**GATEWAY_ENV, "GANTRY_GATEWAY_PORT": str(ports[mode]), "GANTRY_ASYNC_DISPATCH": "0",
               "GANTRY_GATEWAY_ID": f"bench-trace-{mode}"}
        if mode in RATIOS:
            env.update(GANTRY_OTLP_ENDPOINT=sink.url, GANTRY_TRACE_SAMPLE_RATIO=RATIOS[mode])
        stack._spawn(f"gateway-trace-{mode}", "gateway", env)
        ctx.cleanups.append(lambda m=mode: _stop(stack, f"gateway-trace-{m}"))
    for mode in MODES:
        stack.wait(f"the tracing-{mode} gateway", lambda m=mode: _healthy(ports[m]), 30)
    script = loadgen.write_script(stack.tmp)
    auth = f"Bearer {stack.api_key}"
    urls = {m: f"http://127.0.0.1:{ports[m]}/v1/invoke/{NAME}" for m in MODES}
    pids = {m: stack.pid(f"gateway-trace-{m}") for m in MODES}

    def one(mode: str, conns: int, seconds: float) -> dict:
        return loadgen.run_wrk_measuring(pids[mode], urls[mode], script, connections=conns, duration=seconds,
                                         body=BODY, auth=auth)

    for mode in MODES:   # warm-up: connection pools, and the SDK's first export
        one(mode, 64, 1)
    runs: dict = {m: {c: [] for c in CONCURRENCY} for m in MODES}
    done = 0
    for r in range(rounds):
        if r and not ctx.budget.ok(len(MODES) * len(CONCURRENCY) * (duration + 1)):
            break
        for conns in CONCURRENCY:
            for mode in MODES[r % 3:] + MODES[:r % 3]:
                runs[mode][conns].append(one(mode, conns, duration))
        done += 1
    if not sink.requests:
        raise BenchError("the traced gateway exported nothing to the sink")
    out: dict = {"function": {"name": NAME, "handler": "async JSON echo", "cpu": 2.0, "concurrency": 64},
                 "sampling": RATIOS, "exporter": "OTLP/HTTP protobuf, batched (SDK defaults), to a local sink",
                 "duration_s": duration, "rounds": done, "rounds_planned": rounds, "goal_added": GOAL,
                 "exports": {"requests": sink.requests, "bytes": sink.bytes}, "modes": {}, "added": {}}
    for mode in MODES:
        out["modes"][mode] = {str(c): {
            "rps": summary([x["rps"] for x in runs[mode][c]], 1),
            "p50_ms": summary([x["p50_ms"] for x in runs[mode][c]], 3),
            "p99_ms": summary([x["p99_ms"] for x in runs[mode][c]], 3),
            "gateway_cpu_us_per_request": summary([x["proxy_cpu_cores"] / x["rps"] * 1e6 for x in runs[mode][c]
                                                   if x["proxy_cpu_cores"] is not None and x["rps"]], 1),
            "errors": sum(x["errors"] for x in runs[mode][c]),
        } for c in CONCURRENCY}
    for mode, conns in ((m, c) for m in RATIOS for c in CONCURRENCY):
        pairs = list(zip(runs["off"][conns], runs[mode][conns]))
        out["added"].setdefault(mode, {})[str(conns)] = {   # (on - off) / off, per round
            "p50": summary([b["p50_ms"] / a["p50_ms"] - 1 for a, b in pairs if a["p50_ms"]], 3),
            "p99": summary([b["p99_ms"] / a["p99_ms"] - 1 for a, b in pairs if a["p99_ms"]], 3),
            "rps_lost": summary([1 - b["rps"] / a["rps"] for a, b in pairs if a["rps"]], 3),
            "gateway_cpu_per_request": summary([
                (b["proxy_cpu_cores"] / b["rps"]) / (a["proxy_cpu_cores"] / a["rps"]) - 1 for a, b in pairs
                if a["proxy_cpu_cores"] and b["proxy_cpu_cores"] and a["rps"] and b["rps"]], 3),
        }
    stack.delete(NAME)
    return out


def _stop(stack, name: str) -> None:
    proc = stack.procs.pop(name, None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(30)

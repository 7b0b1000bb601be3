"""12. A vLLM function (examples/chat-vllm: a tiny random Llama on the CPU engine): cold start
to first token from zero instances, and, on a ready instance, time to first token and tokens
per second through the gateway and from the engine directly, in the same run.

- cold: the function has no instance (its image is on the node); one streamed chat
  completion through the gateway on a fresh connection, timed from sending to the first
  event that carries text.  A 503 ``no_capacity`` (the engine took longer than the gateway's
  cold-start wait) is retried at once and counted; the time still runs from the first send;
- warm: streamed chat completions of MAX_TOKENS tokens (``ignore_eos``, so every answer has
  that many), the gateway (``/v1/invoke/NAME/v1/chat/completions`` with the platform key)
  and the engine's own port (``/v1/chat/completions`` with the instance key) alternating,
  each on a fresh connection.  Tokens per second: (tokens - 1) / (last token - first token),
  the decoding rate the caller sees; tokens from the final usage chunk.

It needs the vLLM image (``gantry images --vllm``: gigabytes and minutes, so never built
here) and the example; without either the section reports why it was skipped.  It is not
part of a quick run.  The model is made at run time by the example's make_model.py, in a
container of the vLLM image (nothing downloaded).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time

from . import functions, probes
from .stats import ratio, summary

NAME = "bench-vllm"
EXAMPLE = os.path.join("examples", "chat-vllm")
FLAVOUR = "cpu"
MAX_TOKENS = 32
PROMPT = [{"role": "user", "content": "Tell me about the quick brown fox and the lazy dog."}]
COLD_DEADLINE = 300.0        # seconds a cold start may take before the sample fails
SKIPPED_IMAGE = "skipped: vLLM image not built"


# --- the pure parts: reading a stream, the figures, the summary ------------------------------

def sse_payloads(buf: bytearray) -> list[bytes]:
    """The ``data:`` payloads of the complete events at the start of BUF, taken out of it (an
    event ends with a blank line; a partial one stays for the next read)."""
    out = []
    while True:
        end = buf.find(b"\n\n")
        if end < 0:
            return out
        event = bytes(buf[:end])
        del buf[:end + 2]
        data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            out.append(b"\n".join(data))


def token_figures(token_times: list[float], completion_tokens: int | None) -> dict:
    """From the arrival times (seconds after sending) of the events that carried text, and the
    usage's completion tokens: time to first token, and the decoding rate after it."""
    if not token_times:
        return {"ttft_s": None, "last_s": None, "tokens": completion_tokens or 0, "token_events": 0,
                "tokens_per_s": None}
    n = completion_tokens if completion_tokens else len(token_times)
    span = token_times[-1] - token_times[0]
    return {"ttft_s": token_times[0], "last_s": token_times[-1], "tokens": n, "token_events": len(token_times),
            "tokens_per_s": (n - 1) / span if n > 1 and span > 0 else None}


def summarize(cold: list[dict], warm: dict[str, list[dict]]) -> dict:
    """Medians and ranges of the samples; the gateway against the engine paired by round."""
    out: dict = {"cold": {"ttft_ms": summary([c["ttft_s"] * 1000 for c in cold if c.get("ttft_s") is not None], 1),
                          "ready_ms": summary([c["ready_s"] * 1000 for c in cold if c.get("ready_s") is not None], 1),
                          "retries_503": sum(c.get("retries_503", 0) for c in cold), "repeats": len(cold)},
                 "paths": {}}
    for path, runs in warm.items():
        out["paths"][path] = {
            "ttft_ms": summary([r["ttft_s"] * 1000 for r in runs if r["ttft_s"] is not None], 2),
            "last_token_ms": summary([r["last_s"] * 1000 for r in runs if r["last_s"] is not None], 1),
            "tokens_per_s": summary([r["tokens_per_s"] for r in runs], 1),
            "tokens": summary([r["tokens"] for r in runs], 0),
        }
    pairs = list(zip(warm.get("gateway", []), warm.get("direct", [])))
    out["gateway_minus_direct_ttft_ms"] = summary(
        [(g["ttft_s"] - d["ttft_s"]) * 1000 for g, d in pairs if g["ttft_s"] is not None and d["ttft_s"] is not None], 2)
    out["gateway_over_direct_tokens_per_s"] = summary(
        [ratio(g["tokens_per_s"], d["tokens_per_s"], 3) for g, d in pairs], 3)
    out["warm_repeats"] = len(pairs)
    return out


def render(v: dict) -> list[str]:
    """The section's lines in BENCHMARKS.md (render.py adds the title)."""
    if not v.get("available", True):
        return [v.get("why", SKIPPED_IMAGE)]
    fn, s = v["function"], v["summary"]
    out = [f"`{fn['source']}` ({fn['model']}), the {fn['engine']} engine, {fn['cpu']:g} CPU; streamed chat "
           f"completions of {v['max_tokens']} tokens (`ignore_eos`), each on a fresh connection. Cold: "
           f"{s['cold']['repeats']} starts from zero instances through the gateway"
           + (f" ({s['cold']['retries_503']} answers 503 `no_capacity` retried)" if s["cold"]["retries_503"] else "")
           + f"; warm: {s['warm_repeats']} rounds, gateway and engine alternating.", ""]
    c = s["cold"]
    out.append(table_rows(["", "time to first token ms", "instance ready ms"],
                          [["cold, from zero (gateway)", fmt(c["ttft_ms"], 0), fmt(c["ready_ms"], 0)]]))
    rows = [[p, fmt(s["paths"][p]["ttft_ms"], 1), fmt(s["paths"][p]["tokens_per_s"], 1),
             fmt(s["paths"][p]["last_token_ms"], 0)] for p in ("direct", "gateway") if p in s["paths"]]
    rows.append(["gateway − direct", fmt(s["gateway_minus_direct_ttft_ms"], 1),
                 "× " + fmt(s["gateway_over_direct_tokens_per_s"], 3) if s["gateway_over_direct_tokens_per_s"].get("n")
                 else "–", ""])
    out += ["", table_rows(["warm path", "time to first token ms", "tokens/s after the first", "last token ms"], rows)]
    counted = v.get("tokens_counted")
    if counted:
        out += ["", f"Tokens the gateway counted for the function (Prometheus `gantry_gateway_tokens_out_total`): "
                    f"{counted['gateway_counted']:g}, against {counted['client_saw']} in the usage the client "
                    f"read through the gateway."]
    return out


def fmt(s: dict | None, digits: int) -> str:
    from .render import fmt as render_fmt
    return render_fmt(s, digits)


def table_rows(header: list[str], rows: list[list[str]]) -> str:
    from .render import table
    return table(header, rows)


# --- the measurement ---------------------------------------------------------------------------

def stream_chat(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
                timeout: float = 120.0) -> dict:
    """One streamed chat completion on a fresh connection: its status and token_figures (or
    the start of an error's body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        t = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        if resp.status != 200:
            return {"status": resp.status, "error": resp.read()[:300].decode(errors="replace")}
        buf, times, usage, done = bytearray(), [], None, False
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            now = time.perf_counter() - t
            buf += chunk
            for payload in sse_payloads(buf):
                if payload == b"[DONE]":
                    done = True
                    continue
                event = json.loads(payload)
                usage = event.get("usage") or usage
                if any((c.get("delta") or {}).get("content") or c.get("text") for c in event.get("choices") or ()):
                    times.append(now)
        return {"status": 200, "done": done, "usage": usage,
                **token_figures(times, (usage or {}).get("completion_tokens"))}
    finally:
        conn.close()


def _image(docker_client) -> tuple[str | None, str]:
    """The vLLM image's tag if it is on this node, else (None, why)."""
    try:
        from ..build.context import image_exists
        from ..build.images import vllm_image_tag
    except ImportError:
        return None, f"{SKIPPED_IMAGE} (this tree has no gantry.build.images.vllm_image_tag)"
    tag, _ = vllm_image_tag(docker_client, FLAVOUR)
    if not image_exists(docker_client, tag):
        return None, f"{SKIPPED_IMAGE} ({tag} is not on this node: `gantry images --vllm` builds it, in minutes)"
    return tag, ""


def _prepare(ctx, tag: str) -> str:
    """The example under this section's name, with its model made in a container of the image."""
    directory = os.path.join(ctx.fn_dir, NAME)
    shutil.copytree(os.path.join(ctx.repo_root, EXAMPLE), directory, ignore=shutil.ignore_patterns("model"))
    manifest = os.path.join(directory, "gantry.toml")
    with open(manifest, encoding="utf-8") as f:
        text = f.read()
    with open(manifest, "w", encoding="utf-8") as f:
        f.write(re.sub(r'(?m)^name\s*=\s*".*"$', f'name = "{NAME}"', text, count=1))
    ctx.docker.containers.run(tag, ["python3", "/gen/make_model.py", "/gen/model"], remove=True,
                              network_disabled=True, user=f"{os.getuid()}:{os.getgid()}",
                              volumes={directory: {"bind": "/gen", "mode": "rw"}}, environment={"HOME": "/tmp"})
    return directory


def _metric(stack, name: str, function: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {stack.api_key}"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(rf'^{name}\{{function="{re.escape(function)}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def measure(ctx) -> dict:
    if ctx.quick:
        return {"available": False, "why": "skipped: not part of a quick run (an engine start takes 30 s or more)"}
    if not ctx.repo_root or not os.path.isfile(os.path.join(ctx.repo_root, EXAMPLE, "make_model.py")):
        return {"available": False, "why": f"skipped: {EXAMPLE}/make_model.py is not in this checkout"}
    tag, why = _image(ctx.docker)
    if tag is None:
        return {"available": False, "why": why}
    stack = ctx.stack
    cold_repeats, warm_repeats = 3, 10
    t = time.monotonic()
    directory = _prepare(ctx, tag)
    model_s = time.monotonic() - t
    result = functions.build(ctx.docker, directory)
    spec = result.spec
    served = spec.model.served_name or spec.name
    scaling = {"min_instances": 0, "idle_timeout": "2s"}
    if "keep_paused" in spec.to_dict()["scaling"]:
        scaling["keep_paused"] = "0s"          # from zero means no paused instance to resume
    stack.deploy(functions.spec_dict(result, **scaling), result.image)
    body = json.dumps({"model": served, "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}).encode()
    gateway = ("127.0.0.1", stack.port, f"/v1/invoke/{NAME}/v1/chat/completions", body,
               {"Authorization": f"Bearer {stack.api_key}"})
    cold: list[dict] = []
    warm: dict[str, list[dict]] = {"gateway": [], "direct": []}
    client_tokens = 0
    try:
        for i in range(cold_repeats):
            if i and not ctx.budget.ok(90):
                break
            stack.wait(f"{NAME} at zero instances", lambda: stack.function(NAME)["total"] == 0 or None, 120, every=0.2)
            stack.wait_no_containers(NAME, 120)
            with probes.InstanceWatcher(stack.redis.url, NAME, every=0.05) as watch:
                t0, wall0, retries = time.perf_counter(), time.time(), 0
                while True:
                    attempt = time.perf_counter()
                    res = stream_chat(*gateway, timeout=COLD_DEADLINE)
                    if res["status"] == 503 and "no_capacity" in res.get("error", "") \
                            and time.perf_counter() - t0 < COLD_DEADLINE:
                        retries += 1
                        continue
                    break
            if res["status"] != 200 or res["ttft_s"] is None:
                raise RuntimeError(f"cold chat completion answered {res}")
            client_tokens += res["tokens"]
            ready = watch.first("ready")
            cold.append({"ttft_s": attempt - t0 + res["ttft_s"],       # from the first send
                         "ready_s": ready - wall0 if ready else None, "retries_503": retries})
            if i == 0:
                client_tokens += _warm(ctx, stack, gateway, body, warm, warm_repeats)
        counted = _metric(stack, "gantry_gateway_tokens_out_total", NAME)
    finally:
        stack.delete(NAME)
    return {"function": {"name": NAME, "source": EXAMPLE, "engine": FLAVOUR, "cpu": spec.resources.cpu,
                         "model": "tiny random Llama made by make_model.py", "served_name": served},
            "max_tokens": MAX_TOKENS, "model_seconds": round(model_s, 1), "image": tag,
            "summary": summarize(cold, warm), "cold": cold,
            "warm": {p: [{k: r[k] for k in ("ttft_s", "last_s", "tokens", "tokens_per_s")} for r in rs]
                     for p, rs in warm.items()},
            "tokens_counted": {"gateway_counted": counted, "client_saw": client_tokens},
            "note": "the engine directly: its own port on the node's loopback with the instance key"}


def _warm(ctx, stack, gateway, body: bytes, warm: dict[str, list[dict]], repeats: int) -> int:
    """Alternating rounds on the ready instance; returns the tokens read through the gateway."""
    inst = stack.wait(f"a ready {NAME} instance", lambda: stack.ready_instances(NAME), 60)[0]
    host, port = inst["address"].rsplit(":", 1)
    direct = (host, int(port), "/v1/chat/completions", body,
              {"Authorization": f"Bearer {stack.instance_key(inst['id'])}"})
    targets = {"gateway": gateway, "direct": direct}
    seen = stream_chat(*gateway).get("tokens", 0)     # one each first, not measured
    stream_chat(*direct)
    for i in range(repeats):
        if i and not ctx.budget.ok(15):
            break
        for name in (("gateway", "direct") if i % 2 == 0 else ("direct", "gateway")):
            res = stream_chat(*targets[name])
            if res["status"] != 200 or res["ttft_s"] is None:
                raise RuntimeError(f"warm chat completion through {name} answered {res}")
            warm[name].append(res)
            if name == "gateway":
                seen += res["tokens"]
    return seen

"""One fault run: the function built once, then each scenario on a fresh platform (started,
the function deployed and warm, the load and the fault, the logs read, everything stopped and
removed), then the malformed-input run on a platform of its own."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

from .. import functions, machine, probes
from ..runner import _git_changed, _git_commit, repo_root
from . import account, hostile, scenarios
from .effects import LogCapture
from .load import OpenLoop, WORK_S
from .stack import FaultStack

SCHEMA = 1
NAME = "bench-faults"          # the function (and its image's name)
RATE = 20.0                    # requests per second, open loop
CLIENT_TIMEOUT = 60.0          # > the gateway's longest answer: 30 s cold-start wait + 10 s timeout + 5 s
LIMITS = {"full": 720.0, "quick": 110.0}   # seconds: no scenario starts past this
DELIVERY = os.path.join("tests", "gateway", "functions", "delivery", "main.py")
HANDLER = '''import os
import time


def effect(event, ctx):
    """The side effect, then (after ``seconds``) a normal answer."""
    os.write(1, f"SIDE-EFFECT {event['tag']}\\n".encode())   # unbuffered: it survives os._exit
    time.sleep(event.get("seconds", 0))
    return {"tag": event["tag"]}
'''


def say(line: str) -> None:
    print(f"[faults] {line}", file=sys.stderr, flush=True)


def write_function(root: str, repo: str | None) -> str:
    """tests/gateway/functions/delivery's handler (``main:effect``: ``SIDE-EFFECT <tag>`` on
    stdout, then the answer) under the bench's manifest: 0.5 CPU, concurrency 4, exactly one
    instance (so every fault hits the only one), a 10 s timeout, log level warning (no access
    line per request)."""
    directory = os.path.join(root, NAME)
    os.makedirs(directory, exist_ok=True)
    src = os.path.join(repo, DELIVERY) if repo else None
    if src and os.path.isfile(src):
        shutil.copy(src, os.path.join(directory, "main.py"))
    else:
        with open(os.path.join(directory, "main.py"), "w") as f:
            f.write(HANDLER)
    toml = functions.TOML.format(name=NAME, cpu=0.5, memory="128Mi", min_instances=1, max_instances=1,
                                 concurrency=4, idle_timeout="60s", log_level="warning")
    toml = toml.replace('handler = "main:handle"', 'handler = "main:effect"').replace('timeout = "30s"',
                                                                                        'timeout = "10s"')
    if 'handler = "main:effect"' not in toml or 'timeout = "10s"' not in toml:
        raise RuntimeError("bench/functions.py's TOML changed: the fault function's handler or timeout was not set")
    with open(os.path.join(directory, "gantry.toml"), "w") as f:
        f.write(toml)
    return directory


def keep(stack: FaultStack, keep_logs: str | None, name: str) -> None:
    """Copy the daemons' and Redis's logs to KEEP_LOGS/NAME (the evidence for a finding)."""
    if keep_logs:
        dest = os.path.join(keep_logs, name)
        os.makedirs(dest, exist_ok=True)
        for src in [os.path.join(stack.tmp, n) for n in os.listdir(stack.tmp) if n.endswith(".log")] + \
                [os.path.join(stack.tmp, "redis", "redis.log")]:
            if os.path.isfile(src):
                shutil.copy(src, dest)


def run_scenario(sc: scenarios.Scenario, docker_client, spec: dict, image: str, keep_logs: str | None = None) -> dict:
    stack = FaultStack.create(docker_client, aof=sc.aof, standby=sc.standby)
    capture = LogCapture(stack.node_id)
    watcher = None
    out: dict = {"title": sc.title, "promise": sc.promise, "platform": stack.settings, "load_s": sc.seconds,
                 "fault_at_s": sc.fault_at, "rate": RATE, "injector": sc.inject.__name__}
    prefix = f"{sc.key}-{stack.run_id}"
    fault = None
    try:
        stack.start()
        capture.start()
        stack.deploy(spec, image)
        stack.wait(f"{NAME} ready", lambda: stack.ready_instances(NAME) or None, 90, every=0.1)
        for i in range(3):                                # the gateway has the function cached
            status, body, _ = probes.post("127.0.0.1", stack.port, f"/v1/invoke/{NAME}",
                                          json.dumps({"tag": f"warmup-{stack.run_id}-{i}"}).encode(),
                                          {"Authorization": f"Bearer {stack.api_key}"}, timeout=30)
            if status != 200:
                raise RuntimeError(f"warm-up request answered {status}: {body[:200]!r}")
        watcher = probes.InstanceWatcher(stack.redis.url, NAME, every=0.05).__enter__()
        t0 = time.monotonic() + 0.2
        wall0 = time.time() + 0.2
        fault = scenarios.Fault(stack, NAME, spec, image, t0, sc.fault_at)
        load = OpenLoop(f"{stack.url}/v1/invoke/{NAME}", stack.api_key, prefix, rate=RATE, seconds=sc.seconds,
                        timeout=CLIENT_TIMEOUT, t0=t0).start()
        try:
            sc.inject(fault)
        except Exception as exc:  # noqa: BLE001 - the load still finishes; the scenario reports it
            fault.facts["inject_error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc(file=sys.stderr)
        records = load.join()
        time.sleep(1.0)                                   # the last lines reach Docker's log
        capture.collect()
        out["facts"] = fault.facts
        out["exited"] = stack.exited()
        texts = {n: stack.log_text(n) for n in stack.launched}
        out["log_counts"] = account.log_counts(texts)
        out["tracebacks"] = {n: kinds for n, t in texts.items() if (kinds := account.traceback_kinds(t))}
        out["instances"] = _timeline(watcher, wall0)
    finally:
        if watcher is not None:
            watcher.__exit__(None, None, None)
        if fault is not None:
            fault.close()
        out["cleanup_forced"] = stack.stop()
        out["containers_left"] = len(stack.containers())
        capture.close()
        keep(stack, keep_logs, sc.key)
        shutil.rmtree(stack.tmp, ignore_errors=True)
    out["capture"] = capture.summary()
    out["requests"] = account.account(records, capture.side_effects(), out["facts"], sc.planned, prefix)
    return out


def _timeline(watcher, wall0: float) -> list[list]:
    """[seconds after the load began, instance id, state] for every state first seen."""
    return sorted([round(t - wall0, 2), inst, st] for (inst, st), t in watcher.first_seen.items())


def run_hostile(docker_client, spec: dict, image: str, keep_logs: str | None = None) -> dict:
    stack = FaultStack.create(docker_client)
    capture = LogCapture(stack.node_id)
    try:
        stack.start()
        capture.start()
        out = hostile.run(stack, capture, spec, image)
        out["exited"] = stack.exited()
        out["tracebacks"] = sum(account.log_counts({n: stack.log_text(n) for n in stack.launched})
                                ["tracebacks"].values())
    finally:
        forced = stack.stop()
        left = len(stack.containers())
        capture.close()
        keep(stack, keep_logs, "hostile")
        shutil.rmtree(stack.tmp, ignore_errors=True)
    out.update(cleanup_forced=forced, containers_left=left)
    return out


def run(quick: bool = False, only: set[str] | None = None, keep_logs: str | None = None) -> dict:
    import docker

    mode = "quick" if quick else "full"
    try:
        docker_client = docker.from_env(timeout=300)
        docker_client.ping()
    except Exception as exc:
        raise RuntimeError(f"cannot reach the Docker engine ({exc}); is dockerd running?") from None
    started = time.monotonic()
    root = repo_root()
    work = tempfile.mkdtemp(prefix="gantry-faults-fn-")
    results: dict = {"schema": SCHEMA, "mode": mode,
                     "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "git_commit": _git_commit(root), "git_changed": _git_changed(root),
                     "machine": machine.describe(docker_client), "scenarios": {}, "skipped": [], "errors": {}}
    try:
        built = functions.build(docker_client, write_function(work, root))
        spec, image = functions.spec_dict(built), built.image
        results["function"] = {"source": DELIVERY, "handler": "main:effect", "image": image,
                               "work_s": WORK_S, "spec": spec}
        results["load"] = {"rate": RATE, "client_timeout_s": CLIENT_TIMEOUT,
                           "how": "open loop (aiohttp, keep-alive): request i sent at i/rate s whatever the answers; "
                                  "each with its own tag"}
        plan = scenarios.quick() if quick else scenarios.full()
        for sc in plan:
            if only and sc.key not in only and "all" not in only:
                continue
            if time.monotonic() - started + sc.seconds > LIMITS[mode]:
                results["skipped"].append(sc.key)
                say(f"{sc.key}: skipped (time budget)")
                continue
            say(f"{sc.key}: {sc.title} ...")
            t = time.monotonic()
            try:
                results["scenarios"][sc.key] = run_scenario(sc, docker_client, spec, image, keep_logs)
                r = results["scenarios"][sc.key]["requests"]
                say(f"{sc.key}: {r['sent']} sent, {r['ok']} ok, {r['failed']} failed "
                    f"({r['failed_unplanned']} unplanned), {r['duplicates']} duplicates "
                    f"in {time.monotonic() - t:.0f}s")
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on and exits non-zero
                results["errors"][sc.key] = f"{type(exc).__name__}: {exc}"[:4000]
                say(f"{sc.key} FAILED: {type(exc).__name__}: {str(exc)[:2000]}")
                traceback.print_exc(file=sys.stderr)
        if not only or "hostile" in only or "all" in only:
            say("malformed input ...")
            try:
                results["hostile"] = run_hostile(docker_client, spec, image, keep_logs)
            except Exception as exc:  # noqa: BLE001
                results["errors"]["hostile"] = f"{type(exc).__name__}: {exc}"[:4000]
                traceback.print_exc(file=sys.stderr)
    finally:
        functions.remove_images(docker_client, f"gantry/fn-{NAME}")
        shutil.rmtree(work, ignore_errors=True)
        docker_client.close()
    results["machine"]["load_average_end"] = machine.load_average()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results

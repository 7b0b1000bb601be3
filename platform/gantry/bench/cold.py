"""2. Cold start, request to response.

- from zero: the function has no instance (its image is present on the node); one request
  through the gateway on a fresh connection, timed until the whole answer is in;
- with a ready instance: the same request right after, again on a fresh connection;
- from a warm-pool entry: a function whose idle instance was paused (scaling.keep_paused
  > 0: the container frozen with `docker pause` instead of stopped); the request is
  answered once the worker has unpaused it and probed it ready.  Reported as not
  available when the platform's manifest has no keep_paused (no warm pool);
- the breakdown of each cold start on one wall clock, in ms after the request was sent:
  instance placed (the scheduler's record appears in Redis), container created and started
  (Docker's events), runtime listening and handler imported (the runtime's own log lines),
  instance marked ready (the worker's health check, seen in Redis) and the response.  A
  container the worker made ahead of need (worker/spares.py) has no "created" in the
  window: its step is placed -> started, and the sample says ``precreated``.
  Instance states are polled every 5 ms, so those two milestones are late by up to 5 ms.

Between repeats the function scales back to zero by itself (idle_timeout 1 s; for the
from-zero case keep_paused 0 s, so nothing is kept paused), and the repeat waits (at most
SPARE_WAIT) until the worker offers the container it makes ahead of need once the function
is at zero (worker/spares.py), as it would be for a function idle for more than a second."""
from __future__ import annotations

import time

from . import deploy, functions, probes
from .stats import ratio, summary

NAME = "bench-cold"
BODY = b'{"msg": "hello"}'
MILESTONES = ("placed", "created", "started", "listening", "imported", "ready", "response")
SPARE_WAIT = 5.0   # seconds a repeat waits for the worker's container made ahead of need


def measure(ctx) -> dict:
    stack = ctx.stack
    repeats = 3 if ctx.quick else 7
    directory = functions.write_echo(ctx.fn_dir, NAME, "cold", cpu=1.0, min_instances=0, max_instances=1,
                                     concurrency=4, idle_timeout="1s", log_level="info")
    result = functions.build(ctx.docker, directory)
    ctx.images["cold"] = result.image
    spec = functions.spec_dict(result)
    pool_supported = "keep_paused" in spec["scaling"]
    if pool_supported:
        spec = functions.spec_dict(result, keep_paused="0s")
    stack.deploy(spec, result.image)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    path = f"/v1/invoke/{NAME}"
    samples: list[dict] = []
    warm: list[float] = []
    floor: list[float] = []
    build_times = deploy.load_build_times(ctx.repo_root)
    for i in range(repeats):
        if i and not ctx.budget.ok(10):
            break
        stack.wait(f"{NAME} at zero instances", lambda: stack.function(NAME)["total"] == 0 or None, 60, every=0.1)
        stack.wait_no_containers(NAME)
        offered_spare(stack, NAME)
        with probes.InstanceWatcher(stack.redis.url, NAME) as watch:
            t0 = time.time()
            status, body, seconds = probes.post("127.0.0.1", stack.port, path, BODY, headers)
            t_resp = t0 + seconds
            if status != 200:
                raise RuntimeError(f"cold invoke answered {status}: {body[:200]!r}")
            for _ in range(5):
                s, _b, sec = probes.post("127.0.0.1", stack.port, path, BODY, headers)
                if s == 200:
                    warm.append(sec)
        events = probes.docker_events(ctx.docker, t0 - 1, time.time(), [f"gantry.node={stack.node_id}",
                                                                        f"gantry.function={NAME}"])
        # this start's instance's container: never a sandbox (worker/spares.py: it holds a
        # namespace), nor the spare the worker makes meanwhile for a later start
        ids = set(watch.instances())
        events = [e for e in events if (attrs := (e.get("Actor") or {}).get("Attributes") or {}).get("gantry.instance")
                  in ids and not attrs.get("gantry.sandbox")]
        created = [e for e in events if e.get("Action") == "create"]
        sample = {"total_s": seconds, "instances": len(ids), "precreated": False}
        marks = {"placed": watch.first("pending"), "ready": watch.first("ready"), "response": t_resp}
        cid = None
        if created and probes.event_time(created[0]) >= t0:
            cid = created[0]["id"]
            marks["created"] = probes.event_time(created[0])
        else:   # a container made before the request, ahead of need: the start is Docker's start alone
            began = [e for e in events if e.get("Action") == "start" and probes.event_time(e) >= t0 - 0.01]
            if began:
                cid, sample["precreated"] = began[0]["id"], True
        if cid is not None:
            started = [e for e in events if e.get("Action") == "start" and e.get("id") == cid]
            marks["started"] = probes.event_time(started[0]) if started else None
            try:
                logs = probes.runtime_log_times(ctx.docker.containers.get(cid))
            except Exception:  # noqa: BLE001 - the container may already be gone
                logs = {}
            marks["listening"] = logs.get("start")
            marks["imported"] = logs.get("ready")
            sample["import_ms"] = logs.get("import_ms")
        sample["at_ms"] = {k: (round((marks[k] - t0) * 1000, 1) if marks.get(k) else None) for k in MILESTONES}
        samples.append(sample)
        if build_times is not None:  # the floor: the same image and spec, `docker run` until /healthz
            floor.append(build_times.start_until_ready(ctx.docker, result.image, directory))
    at = {k: summary([s["at_ms"].get(k) for s in samples], 1) for k in MILESTONES}
    # each step from the milestone before it in that sample (a container made ahead has no
    # "created": its step is placed->started, the start command and Docker's start alone)
    by_step: dict[str, list[float]] = {}
    for s in samples:
        prev = None
        for k in MILESTONES:
            if s["at_ms"].get(k) is None:
                continue
            if prev is not None:
                by_step.setdefault(f"{prev}->{k}", []).append(s["at_ms"][k] - s["at_ms"][prev])
            prev = k
    order = {f"{a}->{b}": (i, j) for i, a in enumerate(MILESTONES) for j, b in enumerate(MILESTONES)}
    steps = {k: summary(v, 1) for k, v in sorted(by_step.items(), key=lambda kv: order[kv[0]])}
    stack.delete(NAME)
    pool = from_pool(ctx, result, directory) if pool_supported else {
        "available": False, "why": "the platform keeps no warm pool (its manifest has no scaling.keep_paused)"}
    from_zero = summary([s["total_s"] * 1000 for s in samples], 1)
    ready_ms = summary([w * 1000 for w in warm], 2)
    return {
        "function": {"name": NAME, "handler": "async JSON echo", "cpu": 1.0, "memory": "128Mi",
                     "idle_timeout": "1s", "image": "present on the node (built before the run)"},
        "repeats": len(samples), "repeats_planned": repeats,
        "from_zero_ms": from_zero,
        "ready_instance_ms": ready_ms,
        "ready_instance_note": "5 requests after each cold start, each on a fresh connection (like the cold one)",
        "from_zero_vs_ready": ratio(from_zero["median"], ready_ms["median"], 1),
        "docker_run_reference_ms": summary([f * 1000 for f in floor], 1),
        "docker_run_reference_note": ("the same image and container spec started directly (`docker run`, then GET "
                                  "/healthz every 5 ms until 200): benchmarks/build_times.py start_until_ready(), "
                                  "one after each cold start"),
        "from_zero_vs_docker_run": summary([s["total_s"] / f for s, f in zip(samples, floor)], 2),
        "warm_pool": pool,
        "breakdown_at_ms": at,
        "breakdown_steps_ms": steps,
        "import_ms": summary([s.get("import_ms") for s in samples], 1),
        "instances_started": summary([s["instances"] for s in samples], 0),
        "precreated": sum(1 for s in samples if s.get("precreated")),
        "precreated_note": ("cold starts whose container the worker had made ahead of need (created in a network "
                            "namespace kept ready: worker/spares.py), so the start was Docker's start alone"),
        "samples": samples,
    }


def offered_spare(stack, name: str, timeout: float = SPARE_WAIT) -> bool:
    """Wait (at most TIMEOUT) until the worker offers a container made ahead of need for NAME
    (worker/spares.py: it makes one once the function is back at zero); whether it did.  A
    platform without spares, or with GANTRY_PRECREATE=0, just waits the TIMEOUT out."""
    import redis

    from .. import keys

    if not hasattr(keys, "node_spares"):
        return False
    r = redis.Redis.from_url(stack.redis.url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if r.hexists(keys.node_spares(stack.node_id), name):
                return True
            time.sleep(0.05)
        return False
    finally:
        r.close()


POOL_NAME = "bench-pool"
POOL_MILESTONES = ("resuming", "unpaused", "ready", "response")


def _paused_only(stack, name: str):
    fn = stack.function(name)
    states = fn.get("states") or {}
    return (states.get("paused") == 1 and fn["total"] == 1) or None


def from_pool(ctx, result, directory: str) -> dict:
    """Requests to a function scaled to zero whose instance is paused (the warm pool)."""
    stack = ctx.stack
    repeats = 3 if ctx.quick else 7
    spec = {**functions.spec_dict(result, keep_paused="5m"), "name": POOL_NAME}
    stack.deploy(spec, result.image)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    path = f"/v1/invoke/{POOL_NAME}"
    status, body, first_s = probes.post("127.0.0.1", stack.port, path, BODY, headers)  # the one cold start
    if status != 200:
        raise RuntimeError(f"{POOL_NAME}: first invoke answered {status}: {body[:200]!r}")
    samples = []
    for i in range(repeats):
        if i and not ctx.budget.ok(8):
            break
        stack.wait(f"{POOL_NAME}'s instance paused", lambda: _paused_only(stack, POOL_NAME), 60, every=0.05)
        time.sleep(0.2)  # let the freeze settle before timing the thaw
        with probes.InstanceWatcher(stack.redis.url, POOL_NAME) as watch:
            t0 = time.time()
            status, body, seconds = probes.post("127.0.0.1", stack.port, path, BODY, headers)
        if status != 200:
            raise RuntimeError(f"{POOL_NAME}: invoke from the pool answered {status}: {body[:200]!r}")
        events = probes.docker_events(ctx.docker, t0 - 1, time.time(), [f"gantry.node={stack.node_id}",
                                                                        f"gantry.function={POOL_NAME}"])
        unpaused = [probes.event_time(e) for e in events if e.get("Action") == "unpause" and probes.event_time(e) >= t0]
        marks = {"resuming": watch.first("resuming"), "unpaused": min(unpaused) if unpaused else None,
                 "ready": watch.first("ready"), "response": t0 + seconds}
        samples.append({"total_s": seconds, "started_new": len(watch.instances()) > 1 or bool(
                            [e for e in events if e.get("Action") == "create" and probes.event_time(e) >= t0]),
                        "at_ms": {k: (round((v - t0) * 1000, 1) if v else None) for k, v in marks.items()}})
    stack.delete(POOL_NAME)
    steps = {}
    for a, b in zip(POOL_MILESTONES, POOL_MILESTONES[1:]):
        steps[f"{a}->{b}"] = summary([s["at_ms"][b] - s["at_ms"][a] for s in samples
                                      if s["at_ms"].get(a) is not None and s["at_ms"].get(b) is not None], 1)
    return {
        "available": True,
        "how": "idle_timeout 1s, keep_paused 5m: the idle instance is paused (docker pause); the request waits "
               "for the scheduler to resume it and the worker to unpause and probe it",
        "first_cold_start_ms": round(first_s * 1000, 1),
        "repeats": len(samples), "repeats_planned": repeats,
        "request_ms": summary([s["total_s"] * 1000 for s in samples], 1),
        "breakdown_at_ms": {k: summary([s["at_ms"].get(k) for s in samples], 1) for k in POOL_MILESTONES},
        "breakdown_steps_ms": steps,
        "new_containers_started": sum(1 for s in samples if s["started_new"]),
        "samples": samples,
    }

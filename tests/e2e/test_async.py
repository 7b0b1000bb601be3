"""Async invocations end to end, on real Redis and Docker, with the faults issue 12 names:
the dispatching gateway killed with work running, the gateway killed during submissions, a
handler longer than the reclaim window, a poison invocation, idempotent resubmission.

Executions are counted from the function's own "attempt started" log lines (shipped by the
worker to the function's log stream), per invocation id."""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from gantry import keys
from gantry.build import build_function

from conftest import FAST_WORKER, Platform

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "functions", "async-work")
SETTLED = {"succeeded", "failed", "dead", "cancelled", "expired"}


@pytest.fixture(scope="module")
def work_build(docker_client):
    return build_function(docker_client, WORK)


def _spec(build) -> dict:
    return build.spec.to_dict()


def http(p: Platform, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(p.client.url + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {p.client.api_key}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def submit(p: Platform, name: str, event: dict, **headers: str) -> tuple[int, dict]:
    status, _, body = http(p, "POST", f"/v1/invoke/{name}/async", json.dumps(event).encode(),
                           {"Content-Type": "application/json", **headers})
    return status, json.loads(body)


def get(p: Platform, inv_id: str, wait: float = 0) -> dict:
    status, _, body = http(p, "GET", f"/v1/invocations/{inv_id}?wait={wait}", timeout=wait + 30)
    assert status == 200, body
    return json.loads(body)


def wait_settled(p: Platform, ids: list[str], timeout: float = 120.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    out: dict[str, dict] = {}
    while time.monotonic() < deadline and len(out) < len(ids):
        for inv_id in ids:
            if inv_id not in out:
                try:
                    inv = get(p, inv_id)
                except (OSError, AssertionError):
                    continue
                if inv["state"] in SETTLED:
                    out[inv_id] = inv
        time.sleep(0.2)
    missing = [i for i in ids if i not in out]
    assert not missing, f"{len(missing)} never settled, e.g. {get(p, missing[0])}\n{p.logs()}"
    return out


def executions(p: Platform, name: str) -> dict[str, int]:
    """Attempts started per invocation id, from the function's shipped log lines."""
    import redis
    r = redis.Redis.from_url(p.redis_url)
    counts: dict[str, int] = {}
    for _, fields in r.xrange(keys.function_logs(name)):
        try:
            line = json.loads(fields[b"line"])
        except (KeyError, ValueError):
            continue
        if line.get("msg") == "attempt started":
            counts[line["invocation_id"]] = counts.get(line["invocation_id"], 0) + 1
    r.close()
    return counts


def wait_logs(p: Platform, name: str, ids: list[str], timeout: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = executions(p, name)
        if all(i in counts for i in ids) or time.monotonic() > deadline:
            return counts
        time.sleep(0.3)


def restart_gateway(p: Platform, **env: str) -> None:
    port = p.client.url.rsplit(":", 1)[1]
    p.kill("gateway")
    p.start("gateway", "gateway", GANTRY_GATEWAY_PORT=port, GANTRY_COLD_START_TIMEOUT="45", **env)
    p.wait("the gateway back", lambda: p.client.call("GET", "/v1/nodes")["nodes"], timeout=30)


def test_submit_run_and_read_the_result(platform, work_build):
    platform.deploy("async-work", work_build.image, _spec(work_build))
    status, sub = submit(platform, "async-work", {"n": 1})
    assert status == 202 and sub["state"] == "queued" and sub["status_url"] == f"/v1/invocations/{sub['id']}"
    inv = get(platform, sub["id"], wait=60)
    assert inv["state"] == "succeeded", inv
    assert inv["result"] == {"n": 1, "invocation_id": sub["id"]} and inv["attempts"] == 1
    status, headers, raw = http(platform, "GET", f"/v1/invocations/{sub['id']}/result")
    assert status == 200 and json.loads(raw)["n"] == 1 and headers["Content-Type"].startswith("application/json")
    # a 4xx answer settles as failed, without a retry
    _, sub = submit(platform, "async-work", {"n": 2, "status": 422})
    inv = get(platform, sub["id"], wait=30)
    assert inv["state"] == "failed" and inv["attempts"] == 1 and inv["status"] == 422
    # unknown invocations, bad priorities
    assert http(platform, "GET", "/v1/invocations/" + "0" * 32)[0] == 404
    assert submit(platform, "async-work", {}, **{"X-Gantry-Priority": "urgent"})[0] == 400
    assert submit(platform, "nope", {})[0] == 404


def test_a_poison_invocation_is_dead_after_exactly_its_retries(platform, work_build):
    platform.deploy("async-work", work_build.image, _spec(work_build))
    _, sub = submit(platform, "async-work", {"n": 7, "fail": True})
    inv = wait_settled(platform, [sub["id"]], timeout=60)[sub["id"]]
    assert inv["state"] == "dead" and inv["attempts"] == 3 and inv["max_attempts"] == 3, inv
    assert inv["error"]["code"] == "function_error" and "poison 7" in inv["error"]["message"]
    assert wait_logs(platform, "async-work", [sub["id"]])[sub["id"]] == 3     # ran exactly 3 times
    status, _, body = http(platform, "GET", "/v1/dlq")
    listed = [i["id"] for i in json.loads(body)["invocations"]]
    assert status == 200 and listed == [sub["id"]]
    # replay: the same id runs its attempts again and is dead again; purge removes it
    assert http(platform, "POST", f"/v1/dlq/{sub['id']}/replay")[0] == 202
    time.sleep(0.3)
    inv = wait_settled(platform, [sub["id"]], timeout=60)[sub["id"]]
    assert inv["state"] == "dead" and inv["attempts"] == 3 and inv["replays"] == 1
    assert http(platform, "DELETE", f"/v1/dlq/{sub['id']}")[0] == 200
    assert json.loads(http(platform, "GET", "/v1/dlq")[2])["invocations"] == []
    assert http(platform, "GET", f"/v1/invocations/{sub['id']}")[0] == 404


def test_idempotent_resubmission_runs_once(platform, work_build):
    platform.deploy("async-work", work_build.image, _spec(work_build))
    body = json.dumps({"n": 3}).encode()
    hdrs = {"Content-Type": "application/json", "Idempotency-Key": "order-3"}
    first = http(platform, "POST", "/v1/invoke/async-work", body, hdrs, timeout=90)
    again = http(platform, "POST", "/v1/invoke/async-work", body, hdrs, timeout=90)
    assert first[0] == again[0] == 200 and first[2] == again[2]
    assert again[1].get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first[1]
    inv_id = first[1]["X-Gantry-Invocation-Id"]
    # async with the same key returns the same invocation; another body is refused
    status, sub = submit(platform, "async-work", {"n": 3}, **{"Idempotency-Key": "order-3"})
    assert status == 202 and sub["id"] == inv_id and sub["idempotent_replay"] and sub["state"] == "succeeded"
    assert submit(platform, "async-work", {"n": 4}, **{"Idempotency-Key": "order-3"})[0] == 422
    assert wait_logs(platform, "async-work", [inv_id])[inv_id] == 1


def test_kill_9_the_dispatching_gateway_with_20_running(platform, work_build):
    """Every one of 20 running invocations ends succeeded, and none ran twice: the restarted
    gateway (the same dispatcher name) takes its pending entries back and joins the runs
    still going on the instance instead of starting them again."""
    platform.deploy("async-work", work_build.image, _spec(work_build))
    assert get(platform, submit(platform, "async-work", {"n": 0})[1]["id"], wait=60)["state"] == "succeeded"
    ids = [submit(platform, "async-work", {"n": i, "sleep": 6})[1]["id"] for i in range(20)]
    platform.wait("20 running", lambda: all(get(platform, i)["state"] == "running" for i in ids), timeout=30)
    restart_gateway(platform)
    done = wait_settled(platform, ids, timeout=90)
    states = [done[i]["state"] for i in ids]
    counts = wait_logs(platform, "async-work", ids)
    twice = sum(1 for i in ids if counts.get(i, 0) > 1)
    print(f"\nkill -9 with 20 running: succeeded {states.count('succeeded')}/20, ran twice {twice}, "
          f"attempts {[done[i]['attempts'] for i in ids]}")
    assert states == ["succeeded"] * 20
    assert twice == 0 and all(done[i]["attempts"] == 1 for i in ids)


def test_a_handler_longer_than_the_reclaim_window_is_never_started_twice(platform, work_build):
    """Two dispatching gateways with a 1 s reclaim window; each handler runs 5 s."""
    platform.deploy("async-work", work_build.image, _spec(work_build))
    restart_gateway(platform, GANTRY_ASYNC_RECLAIM_AFTER="1s")
    from gantry.up import free_port
    platform.start("gateway2", "gateway", GANTRY_GATEWAY_PORT=str(free_port()), GANTRY_ASYNC_RECLAIM_AFTER="1s")
    ids = [submit(platform, "async-work", {"n": i, "sleep": 5})[1]["id"] for i in range(6)]
    done = wait_settled(platform, ids, timeout=90)
    counts = wait_logs(platform, "async-work", ids)
    assert [done[i]["state"] for i in ids] == ["succeeded"] * 6
    assert [counts.get(i) for i in ids] == [1] * 6


def test_kill_the_gateway_during_1000_submissions(platform, work_build):
    """Every submission answered 202 completes.  A submission whose answer was lost (refused,
    or the connection broke) is sent again with the same Idempotency-Key until it gets its
    202: in the end all 1,000 are accepted, each exactly once, and each runs once."""
    node = next(n for n in platform.procs if n.startswith("e2e-"))
    platform.kill(node)        # a worker that keeps every log line of 1,000 runs
    platform.start(node, "worker", GANTRY_NODE_ID=node, GANTRY_LOG_MAXLEN="20000", **FAST_WORKER)
    platform.deploy("async-work", work_build.image, _spec(work_build))
    accepted: dict[int, str] = {}
    first_failed = [0]
    lock = threading.Lock()

    def send(start: int) -> None:
        for i in range(start, 1000, 4):
            deadline = time.monotonic() + 60
            tries = 0
            while time.monotonic() < deadline:
                tries += 1
                try:
                    status, sub = submit(platform, "async-work", {"n": i}, **{"Idempotency-Key": f"sub-{i}"})
                except (OSError, ValueError):
                    status, sub = 0, {}
                if status == 202:
                    with lock:
                        accepted[i] = sub["id"]
                        first_failed[0] += tries > 1
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(accepted) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    port = platform.client.url.rsplit(":", 1)[1]
    platform.kill("gateway")
    time.sleep(1.0)
    platform.start("gateway", "gateway", GANTRY_GATEWAY_PORT=port, GANTRY_COLD_START_TIMEOUT="45")
    for t in threads:
        t.join(120)
    ids = list(accepted.values())
    done = wait_settled(platform, ids, timeout=180)
    succeeded = sum(1 for v in done.values() if v["state"] == "succeeded")
    counts = wait_logs(platform, "async-work", ids, timeout=60)
    ran = sorted(counts.get(i, 0) for i in ids)
    print(f"\nkill during 1000 submissions: accepted {len(accepted)} ({len(set(ids))} distinct), "
          f"{first_failed[0]} needed a resend, succeeded {succeeded}, ran once {ran.count(1)}, "
          f"ran twice {sum(1 for n in ran if n > 1)}")
    assert len(accepted) == 1000 and len(set(ids)) == 1000 and first_failed[0] > 0
    assert succeeded == 1000 and ran == [1] * 1000


def _one_at_a_time(build, **async_policy) -> dict:
    spec = _spec(build)
    spec["scaling"]["concurrency"] = 1
    spec["async"].update(async_policy)
    return spec


def _block(p: Platform, seconds: float) -> str:
    """Submit work that holds the function's only slot; return once it runs."""
    blocker = submit(p, "async-work", {"n": -1, "sleep": seconds})[1]["id"]
    p.wait("the blocker running", lambda: get(p, blocker)["state"] == "running", timeout=60)
    return blocker


def test_high_priority_first_and_low_not_starved_and_cancel(platform, work_build):
    """One slot: while a blocker runs, 10 low then 10 high are queued and one more is
    cancelled; then they run one at a time: high first, low not starved, the cancelled never."""
    platform.deploy("async-work", work_build.image, _one_at_a_time(work_build))
    blocker = _block(platform, 3)
    low = [submit(platform, "async-work", {"n": i}, **{"X-Gantry-Priority": "low"})[1]["id"] for i in range(10)]
    high = [submit(platform, "async-work", {"n": 100 + i}, **{"X-Gantry-Priority": "high"})[1]["id"]
            for i in range(10)]
    doomed = submit(platform, "async-work", {"n": 999})[1]["id"]
    status, _, body = http(platform, "DELETE", f"/v1/invocations/{doomed}")
    assert status == 200 and json.loads(body)["was"] == "queued"
    assert http(platform, "DELETE", f"/v1/invocations/{blocker}")[0] == 409      # running: not cancellable
    done = wait_settled(platform, [blocker, *low, *high, doomed], timeout=90)
    order = sorted(low + high, key=lambda i: done[i]["started"])
    first_ten = order[:10]
    print(f"\npriority: of the first 10 to start after the blocker, {sum(i in high for i in first_ten)} high, "
          f"{sum(i in low for i in first_ten)} low")
    assert order[0] in high                                   # high is served first...
    assert sum(i in high for i in first_ten) >= 7             # ...mostly...
    assert any(i in low for i in first_ten)                   # ...and low is not starved behind it
    assert done[doomed]["state"] == "cancelled" and doomed not in wait_logs(platform, "async-work", [blocker])


def test_an_invocation_that_waits_past_its_max_event_age_expires(platform, work_build):
    platform.deploy("async-work", work_build.image, _one_at_a_time(work_build, max_event_age="1s"))
    blocker = _block(platform, 3)
    late = submit(platform, "async-work", {"n": 1})[1]["id"]
    done = wait_settled(platform, [blocker, late], timeout=60)
    assert done[blocker]["state"] == "succeeded"
    assert done[late]["state"] == "expired" and done[late]["attempts"] == 0
    assert late in [i["id"] for i in json.loads(http(platform, "GET", "/v1/dlq")[2])["invocations"]]


def test_a_signed_callback_reaches_a_receiver_that_checks_it(platform, work_build):
    import http.server
    from gantry.invocations import signing

    secret = bytes.fromhex(platform.client.call("GET", "/v1/callbacks/secret")["secret"])
    received: list[tuple[bool, dict]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ok = signing.verify(secret, self.headers.get("X-Gantry-Signature", ""), body, time.time())
            received.append((ok, json.loads(body)))
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        platform.deploy("async-work", work_build.image, _spec(work_build))
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        _, sub = submit(platform, "async-work", {"n": 5}, **{"X-Callback-Url": url})
        platform.wait("the callback", lambda: received, timeout=60)
        ok, payload = received[0]
        assert ok and payload["id"] == sub["id"] and payload["result"]["n"] == 5
        platform.wait("delivery recorded", lambda: get(platform, sub["id"])["callback"]["state"] == "delivered",
                      timeout=10)
        time.sleep(0.5)
        assert len(received) == 1
        # a forged signature is refused by the same check
        assert not signing.verify(secret, signing.sign(b"x" * 32, b"{}", int(time.time())), b"{}", time.time())
    finally:
        server.shutdown()


def test_a_schedule_fires_async_invocations_each_tick(platform, work_build):
    spec = _spec(work_build)
    spec["schedules"] = [{"name": "every-second", "cron": "* * * * * *", "payload": {"n": 42}}]
    platform.deploy("async-work", work_build.image, spec)

    def fired():
        rows = platform.client.call("GET", "/v1/schedules")["schedules"]
        return rows and rows[0]["last_invocation"]

    first = platform.wait("a tick", fired, timeout=30)
    inv = get(platform, first, wait=30)
    assert inv["state"] == "succeeded" and inv["source"] == "schedule" and inv["schedule"] == "every-second"
    assert inv["result"]["n"] == 42
    platform.wait("a later tick", lambda: fired() != first, timeout=10)

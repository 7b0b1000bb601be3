"""What a measurement watches while it runs: instance records in Redis (state transitions,
polled on a thread), Docker's events for this run's containers, the runtime's own log lines,
and single HTTP requests timed from the caller's side."""
from __future__ import annotations

import http.client
import json
import threading
import time
from datetime import datetime

from .. import keys, state


class InstanceWatcher:
    """Polls the function's instance records every ``every`` seconds on a thread and keeps
    the wall-clock time each (instance, state) was first seen: resolution ``every``."""

    def __init__(self, redis_url: str, function: str, every: float = 0.005):
        import redis

        self.r = redis.Redis.from_url(redis_url)
        self.function, self.every = function, every
        self.first_seen: dict[tuple[str, str], float] = {}
        self.versions: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"watch-{function}", daemon=True)

    def __enter__(self) -> "InstanceWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.r.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ids = self.r.smembers(keys.function_instances(self.function))
                if ids:
                    pipe = self.r.pipeline(transaction=False)
                    for i in ids:
                        pipe.hgetall(keys.instance(i.decode()))
                    records = pipe.execute()
                    # Stamped once the read has returned: a state is never dated before it
                    # existed (a stamp taken before the read could precede the request).
                    now = time.time()
                    for raw in records:
                        inst = state.Instance.from_hash(raw) if raw else None
                        if inst is not None:
                            self.first_seen.setdefault((inst.id, inst.state), now)
                            self.versions[inst.id] = inst.version
            except Exception:  # noqa: BLE001 - a probe; the measurement reports what it saw
                pass
            self._stop.wait(self.every)

    def instances(self) -> list[str]:
        return sorted({i for i, _ in self.first_seen})

    def first(self, st: str, instance: str | None = None) -> float | None:
        times = [t for (i, s), t in self.first_seen.items() if s == st and (instance is None or i == instance)]
        return min(times) if times else None

    def all_times(self, st: str) -> list[float]:
        return sorted(t for (_, s), t in self.first_seen.items() if s == st)


def docker_events(docker_client, since: float, until: float, labels: list[str]) -> list[dict]:
    """Container events with these labels between two wall-clock times (fractional seconds)."""
    stream = docker_client.events(since=f"{since:.6f}", until=f"{until:.6f}", decode=True,
                                  filters={"type": "container", "label": labels})
    try:
        return [e for e in stream]
    finally:
        stream.close()


def event_time(event: dict) -> float:
    return event["timeNano"] / 1e9 if "timeNano" in event else float(event["time"])


def runtime_log_times(container) -> dict[str, float]:
    """Wall-clock times of the runtime's "start" (listening) and "ready" (handler imported)
    log lines, and the import_ms it reported."""
    out: dict[str, float] = {}
    try:
        raw = container.logs(stdout=True, stderr=False, tail=200)
    except Exception:  # noqa: BLE001
        return out
    for line in raw.decode(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        msg = entry.get("msg")
        if msg in ("start", "ready") and msg not in out and entry.get("ts"):
            out[msg] = datetime.fromisoformat(entry["ts"]).timestamp()
            if msg == "ready" and "import_ms" in entry:
                out["import_ms"] = float(entry["import_ms"])
    return out


def post(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
         timeout: float = 60.0) -> tuple[int, bytes, float]:
    """One POST on a fresh connection: (status, body, seconds from send to the whole answer)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        t = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - t
    finally:
        conn.close()


def post_stream(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
                timeout: float = 60.0) -> dict:
    """One streamed POST on a fresh connection: seconds to the headers, to the first body
    bytes and to the end of the body, and the number of reads that returned data."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        t = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        t_headers = time.perf_counter() - t
        first = None
        reads = 0
        size = 0
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            reads += 1
            size += len(chunk)
            if first is None:
                first = time.perf_counter() - t
        return {"status": resp.status, "headers_s": t_headers, "first_s": first,
                "last_s": time.perf_counter() - t, "reads": reads, "bytes": size}
    finally:
        conn.close()

"""Side effects counted from the function's container logs.  The handler writes
``SIDE-EFFECT <tag>`` to stdout before anything else, and Docker keeps a container's log
after it died, until the container is removed; but the platform removes containers itself (a
failed instance is removed, an orphan swept), so the logs are read as they are written: every
container of the node is followed from its start (Docker's events), each follower reading the
whole log from the beginning, and at the end every container still there is read once more.
Per container the longest text read is kept (each read starts at the beginning), so a
container that was followed twice is never counted twice."""
from __future__ import annotations

import threading
from collections import Counter

MARK = b"SIDE-EFFECT "


class LogCapture:
    def __init__(self, node_id: str) -> None:
        import docker

        # a client of its own: every follower holds one connection of its pool
        self.docker = docker.from_env(timeout=60, max_pool_size=64)
        self.label = f"gantry.node={node_id}"
        self.texts: dict[str, bytes] = {}
        self.errors: dict[str, str] = {}
        self.seen: set[str] = set()
        self._followers: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._events = None
        self._events_thread: threading.Thread | None = None

    # -- following -----------------------------------------------------------------------------
    def start(self) -> "LogCapture":
        self._events = self.docker.api.events(decode=True, filters={"type": "container", "label": [self.label],
                                                                    "event": ["start"]})
        self._events_thread = threading.Thread(target=self._watch, name="faults-events", daemon=True)
        self._events_thread.start()
        for c in self._listed():                     # any that started before the events stream
            self.follow(c["Id"])
        return self

    def _watch(self) -> None:
        try:
            for event in self._events:
                if event.get("id"):
                    self.follow(event["id"])
        except Exception:  # noqa: BLE001 - the stream was closed
            pass

    def follow(self, cid: str) -> None:
        with self._lock:
            self.seen.add(cid)
            current = self._followers.get(cid)
            if current is not None and current.is_alive():
                return
            thread = threading.Thread(target=self._read, args=(cid, True), name=f"faults-log-{cid[:12]}",
                                      daemon=True)
            self._followers[cid] = thread
        thread.start()

    def _read(self, cid: str, follow: bool) -> None:
        import docker.errors

        buf = bytearray()
        try:
            if follow:
                for chunk in self.docker.api.logs(cid, stdout=True, stderr=True, stream=True, follow=True):
                    buf += chunk
            else:
                buf += self.docker.api.logs(cid, stdout=True, stderr=True, stream=False)
        except docker.errors.NotFound:
            if not buf and cid not in self.texts:
                self.errors[cid] = "removed before its log could be read"
        except Exception as exc:  # noqa: BLE001 - recorded: the accounting shows it
            self.errors[cid] = f"{type(exc).__name__}: {exc}"[:300]
        with self._lock:
            if len(buf) >= len(self.texts.get(cid, b"")):
                self.texts[cid] = bytes(buf)
                if buf:
                    self.errors.pop(cid, None)

    def _listed(self) -> list[dict]:
        return self.docker.api.containers(all=True, filters={"label": [self.label]})

    # -- collecting ----------------------------------------------------------------------------
    def collect(self) -> None:
        """Read every container still there once more (before the platform stops and removes
        them); the followers of containers already gone have finished with their whole log."""
        for c in self._listed():
            with self._lock:
                self.seen.add(c["Id"])
            self._read(c["Id"], False)

    def close(self, wait: float = 5.0) -> None:
        if self._events is not None:
            try:
                self._events.close()
            except Exception:  # noqa: BLE001
                pass
        for thread in list(self._followers.values()):
            thread.join(wait)
        self.docker.close()

    # -- counting ------------------------------------------------------------------------------
    def side_effects(self) -> Counter:
        """tag -> how many times its side effect ran, over every container."""
        counts: Counter = Counter()
        with self._lock:
            texts = list(self.texts.values())
        for text in texts:
            for line in text.splitlines():
                if line.startswith(MARK):
                    counts[line[len(MARK):].strip().decode(errors="replace")] += 1
        return counts

    def summary(self) -> dict:
        """Containers seen, those whose log was read, and those it could not be (with why):
        a side-effect count is complete only when ``unreadable`` is empty."""
        with self._lock:
            return {"containers_seen": len(self.seen), "containers_read": len(self.texts),
                    "unreadable": {cid[:12]: why for cid, why in self.errors.items()}}

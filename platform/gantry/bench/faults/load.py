"""Open-loop load: requests sent at a fixed rate whatever the answers (a slow or failing
platform does not slow the sender down, as it would a closed loop), each with a tag of its
own, each recorded with when it was sent, when it was answered, the status and the error
code.  It runs on an event loop of its own in a thread, so that the fault is injected from
the main thread (a process started there outlives the load: see ``stack._term_with_parent``)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass

WORK_S = 0.05                # the handler sleeps this long after its side effect: some requests
                             # are always in flight when the fault strikes


@dataclass
class Record:
    tag: str
    sent: float              # seconds after the load began
    done: float = -1.0       # seconds after the load began; -1: never finished (a harness bug)
    status: int = 0          # 0: no HTTP answer
    code: str = ""           # the error body's code, or what the client saw instead of an answer

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.code

    def row(self) -> list:
        """Compact form for the results file: [tag suffix, sent, done, status, code]."""
        return [self.tag.rsplit("-", 1)[-1], round(self.sent, 3), round(self.done, 3), self.status, self.code]


def error_code(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "no_json_error_body"


async def _drive(url: str, api_key: str, prefix: str, rate: float, seconds: float, timeout: float,
                 t0: float, records: list[Record]) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def one(rec: Record) -> None:
            body = json.dumps({"tag": rec.tag, "seconds": WORK_S})
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    rec.status = resp.status
                    if resp.status != 200:
                        rec.code = error_code(raw)
                    else:
                        try:
                            answer = json.loads(raw)
                        except ValueError:
                            answer = None
                        if not isinstance(answer, dict) or answer.get("tag") != rec.tag:
                            rec.code = "wrong_answer"      # another request's answer, or garbage
            except asyncio.TimeoutError:
                rec.code = "client_timeout"
            except aiohttp.ClientError as exc:
                rec.code = f"connection_error:{type(exc).__name__}"
            rec.done = time.monotonic() - t0

        tasks = []
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = Record(f"{prefix}-{i:05d}", time.monotonic() - t0)
            records.append(rec)
            tasks.append(asyncio.create_task(one(rec)))
        if tasks:
            await asyncio.wait(tasks)          # each bounded by the client timeout


class OpenLoop:
    """``start()`` begins sending at ``t0``; ``join()`` waits until every request is answered
    or timed out and returns the records, in the order sent."""

    def __init__(self, url: str, api_key: str, prefix: str, *, rate: float, seconds: float, timeout: float,
                 t0: float) -> None:
        self.records: list[Record] = []
        self.error: BaseException | None = None
        self._args = (url, api_key, prefix, rate, seconds, timeout, t0, self.records)
        self._thread = threading.Thread(target=self._run, name=f"load-{prefix}", daemon=True)
        self.bound = seconds + timeout + 10      # the longest join() can take

    def _run(self) -> None:
        try:
            asyncio.run(_drive(*self._args))
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def start(self) -> "OpenLoop":
        self._thread.start()
        return self

    def join(self) -> list[Record]:
        self._thread.join(self.bound)
        if self._thread.is_alive():
            raise RuntimeError("the load generator did not finish within its bound")
        if self.error is not None:
            raise RuntimeError(f"the load generator failed: {self.error!r}") from self.error
        return self.records

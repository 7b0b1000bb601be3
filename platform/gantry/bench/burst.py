"""A burst of N concurrent POSTs, in its own process (aiohttp on uvloop, one connection per
request).  Reads {"url", "n", "body", "headers"} as JSON on stdin; prints one JSON line:
the wall-clock start, and each request's status and seconds from the start to its answer.

    python -m gantry.bench.burst < config.json
"""
from __future__ import annotations

import asyncio
import json
import sys
import time


async def burst(url: str, n: int, body: bytes, headers: dict) -> dict:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        gate = asyncio.Event()

        async def one() -> tuple[int, float]:
            await gate.wait()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status, time.perf_counter() - t0
            except Exception:  # noqa: BLE001 - counted, reported
                return -1, time.perf_counter() - t0

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0)
        wall0 = time.time()
        t0 = time.perf_counter()
        gate.set()
        results = await asyncio.gather(*tasks)
    return {"wall_start": wall0, "statuses": [s for s, _ in results], "seconds": [t for _, t in results]}


def main() -> int:
    cfg = json.load(sys.stdin)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    out = runner(burst(cfg["url"], int(cfg["n"]), cfg.get("body", "{}").encode(), cfg.get("headers", {})))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

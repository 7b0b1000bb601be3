"""Instructions per Redis call with redis-py's reply parsers (README, "Dependencies": hiredis).

Runs itself under valgrind's callgrind twice per parser, N=0 and N=PAIRS calls of a GET and an
HGETALL of 12 fields on redis.asyncio, and prints (instructions(N) - instructions(0)) / N:
start-up and import cancel out.  Needs a Redis (URL as the first argument).

Run: PYTHONPATH=platform:runtime .venv/bin/python benchmarks/redis_parser.py redis://127.0.0.1:6379/15
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile

PAIRS = 2000


async def _calls(url: str, parser: str, n: int) -> None:
    import redis.asyncio as aioredis
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    cls = {"python": _AsyncRESP2Parser, "hiredis": _AsyncHiredisParser}[parser]
    r = aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(url, parser_class=cls))
    await r.set("bench:parser:k", "v" * 100)
    await r.hset("bench:parser:h", mapping={f"f{i}": "x" * 20 for i in range(12)})
    for _ in range(n):
        await r.get("bench:parser:k")
        await r.hgetall("bench:parser:h")
    await r.delete("bench:parser:k", "bench:parser:h")
    await r.aclose()


def _count(url: str, parser: str, n: int) -> int:
    with tempfile.NamedTemporaryFile() as out:
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", sys.executable,
                               __file__, "--run", url, parser, str(n)], capture_output=True, text=True, check=True)
    return int(re.search(r"refs:\s+([\d,]+)", proc.stderr).group(1).replace(",", ""))


def main() -> None:
    if sys.argv[1] == "--run":
        asyncio.run(_calls(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    url = sys.argv[1]
    for parser in ("python", "hiredis"):
        per = (_count(url, parser, PAIRS) - _count(url, parser, 0)) / PAIRS
        print(f"{parser}: {per:,.0f} instructions per GET + HGETALL(12 fields)")


if __name__ == "__main__":
    main()

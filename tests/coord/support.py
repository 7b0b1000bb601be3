"""The gateway on a loopback test server with the coordination API, and SDK clients for it."""
from __future__ import annotations

from contextlib import asynccontextmanager

from gantry.coord import AsyncCoord

from gateway.support import ADMIN_KEY, gateway

# coordination calls have their own per-key limit (GANTRY_COORD_RATE_LIMIT): off here, as
# the others are, so that the safety runs measure the primitives and not the limiter
NO_LIMITS = dict(admin_rate_limit=0, rate_limit=0, coord_rate_limit=0)


@asynccontextmanager
async def coord_gateway(redis_url: str, app_hook=None, **overrides):
    """(test client, url) of a gateway whose admin key is ADMIN_KEY."""
    async with gateway(redis_url, app_hook=app_hook, **{**NO_LIMITS, **overrides}) as client:
        yield client, str(client.make_url("")).rstrip("/")


@asynccontextmanager
async def clients(url: str, n: int, key: str = ADMIN_KEY):
    made = [AsyncCoord(url, key, timeout=10) for _ in range(n)]
    try:
        yield made
    finally:
        for c in made:
            await c.close()

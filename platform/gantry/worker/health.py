"""Instance health: the state machine (pure) and one probe of GET /healthz (a vllm instance:
GET /v1/models while it starts or resumes, GET /health once ready: vllmengine.probes).

starting --1 success--> ready --3 failures in a row--> unhealthy --2 successes in a row--> ready.
Failures while starting only count against the start timeout (an import may take a while);
a container that exited is failed whatever the state (the agent checks that on a failure).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from .. import state as st
from . import vllmengine

UNHEALTHY_AFTER = 3    # consecutive failures: ready -> unhealthy
READY_AFTER = 2        # consecutive successes: unhealthy -> ready


@dataclass
class Counters:
    fails: int = 0     # consecutive failed probes
    oks: int = 0       # consecutive good probes
    last_error: str = ""


def transition(state: str, counters: Counters, ok: bool, error: str = "") -> str | None:
    """Record one probe result; return the new state, or None when the state stays."""
    if ok:
        counters.fails, counters.oks = 0, counters.oks + 1
    else:
        counters.fails, counters.oks, counters.last_error = counters.fails + 1, 0, error
    if state == st.STARTING:
        return st.READY if ok else None
    if state == st.READY:
        return st.UNHEALTHY if counters.fails >= UNHEALTHY_AFTER else None
    if state == st.UNHEALTHY:
        return st.READY if counters.oks >= READY_AFTER else None
    return None


async def inflight(session: aiohttp.ClientSession, url: str, timeout: float,
                   runtime: str = "python3.11") -> int | None:
    """The runtime's in-flight invocations from GET URL/healthz ("inflight", answered while
    ready and while draining alike), a vLLM engine's requests running or waiting from its
    /metrics; None when it cannot be read."""
    if runtime == vllmengine.RUNTIME:
        try:
            async with session.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return vllmengine.inflight_from_metrics(await resp.text()) if resp.status == 200 else None
        except (asyncio.TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return None
    try:
        async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None)
    except (asyncio.TimeoutError, aiohttp.ClientError, ValueError):
        return None
    value = body.get("inflight") if isinstance(body, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def probe_request(runtime: str, state: str, key: str) -> tuple[str, dict[str, str]]:
    """(path, headers) of the probe of an instance of RUNTIME in STATE: the readiness path
    while it starts or resumes, the liveness path otherwise (the same /healthz for the Python
    runtime); the instance key as a bearer token where the engine asks for one."""
    target = vllmengine.probes(runtime)
    if state in (st.STARTING, st.RESUMING):
        return target.ready, ({"Authorization": f"Bearer {key}"} if target.bearer and key else {})
    return target.live, {}


async def probe(session: aiohttp.ClientSession, url: str, timeout: float, path: str = "/healthz",
                headers: dict[str, str] | None = None) -> tuple[bool, str]:
    """(ok, error) of one GET URL+PATH: ok means 200 within the timeout."""
    try:
        async with session.get(f"{url}{path}", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status == 200:
                return True, ""
            body = (await resp.text())[:200]
            return False, f"{path} answered {resp.status}: {body}"
    except asyncio.TimeoutError:
        return False, f"{path} did not answer within {timeout:g}s"
    except aiohttp.ClientError as exc:
        return False, f"{path}: {type(exc).__name__}: {exc}"[:300]

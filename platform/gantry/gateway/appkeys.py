"""Typed keys of the gateway's aiohttp application and requests (set up by app.create_app)."""
from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from .admission import Admission
from .auth import Authenticator, Principal
from .cache import FunctionCache
from .load import LoadReporter
from .metrics import Metrics
from .settings import GatewaySettings
from .upstream import UpstreamPool
from ..invocations.store import InvocationStore
from ..store import Store
from ..tenants.store import TenantStore

SETTINGS = web.AppKey("settings", GatewaySettings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", Store)                          # every control-plane record read and write
TENANTS = web.AppKey("tenants", TenantStore)                # tenants and API keys
INVOCATIONS = web.AppKey("invocations", InvocationStore)    # async invocations
UPSTREAM = web.AppKey("upstream", UpstreamPool)             # pooled connections to instances
CACHE = web.AppKey("cache", FunctionCache)
AUTH = web.AppKey("auth", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
REPORTER = web.AppKey("reporter", LoadReporter)
ADMISSION = web.AppKey("admission", Admission)               # invocations per key
ADMIN_ADMISSION = web.AppKey("admin_admission", Admission)   # admin API calls per key
COORD_ADMISSION = web.AppKey("coord_admission", Admission)   # /v1/coord/ calls per key (their own budget)

if hasattr(web, "RequestKey"):   # aiohttp >= 3.12
    PRINCIPAL = web.RequestKey("principal", Principal)
else:  # pragma: no cover
    PRINCIPAL = "gantry.principal"  # type: ignore[assignment]

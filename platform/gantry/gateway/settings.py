"""The gateway's configuration: a frozen dataclass built from the environment or passed in."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Mapping

from gantry_runtime.config import Env, SettingsError, given

from ..manifest import MAX_BODY
from ..usage.model import Prices, parse_prices
from ..settings import redis_url as env_redis_url
from .workers import worker_identity

__all__ = ["GatewaySettings", "SettingsError"]


_FLAGS = ("1", "0", "true", "false", "yes", "no")
MAX_WORKERS = 64


def _random_id() -> str:
    return "gw-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class GatewaySettings:
    redis_url: str = field(repr=False)     # may carry a password (gantry up's own Redis)
    host: str = "127.0.0.1"
    port: int = 8000
    gateway_id: str = field(default_factory=_random_id)
    workers: int = 1                       # gateway processes on this port (SO_REUSEPORT; gateway.workers)
    worker_index: int | None = None        # this process's index among them (set by the supervisor)
    max_body: int = 6 * 1024 * 1024        # request body bytes unless the function's [limits] max_body
                                           # says otherwise (at most manifest.MAX_BODY); more -> 413
    cold_start_timeout: float = 30.0       # seconds a request may wait for a free instance slot
    engine_cold_start_timeout: float = 300.0  # the same for a vLLM function's OpenAI routes (model load)
    load_report_interval: float = 0.5      # seconds between load reports to fn:NAME:load
    cache_refresh_interval: float = 1.0    # seconds between full cache refreshes (pub/sub is the fast path)
    admin_key_hash: str | None = None      # sha256 hex; None: read keys.ADMIN_KEY_HASH from Redis
    upstream_timeout_margin: float = 5.0   # added to the function's timeout before the gateway gives up (504)
    max_tries: int = 3                     # instances tried per request (503 draining/at_capacity, refused)
    rate_limit: float = 1000.0             # requests/s per API key (0: no limit); more -> 429
    rate_burst: float = 2000.0             # requests a key may send at once
    admin_rate_limit: float = 100.0        # admin API calls/s per key (0: no limit); more -> 429
    admin_rate_burst: float = 200.0        # admin API calls a key may send at once
    coord_rate_limit: float = 2000.0       # /v1/coord/ calls/s per key or function instance (0: no limit)
    coord_rate_burst: float = 4000.0       # /v1/coord/ calls a key may send at once
    auth_failure_rate: float = 1.0         # wrong keys/s per client address (0: no limit); more -> 429
    auth_failure_burst: float = 10.0       # wrong keys an address may send at once
    header_timeout: float = 10.0           # seconds for a request head (a new connection's first one
                                           # from connect; later ones from their first byte); 0: none
    keepalive_timeout: float = 75.0        # seconds an idle client connection is kept
    metrics_public: bool = False           # serve /metrics without a key (else the admin key is needed)
    usage_flush_interval: float = 5.0      # seconds between writes of the metered usage to Redis
    prices: Prices = Prices()              # the operator's price table (zero: no cost)
    # async invocations (docs/async.md)
    async_dispatch: bool = True            # run the async dispatcher in this gateway
    dispatch_id: str = ""                  # the dispatcher's stable name ("": HOSTNAME:PORT); a
                                           # restarted gateway takes back the work it held under it
    async_retention: float = 86400.0       # seconds a settled invocation's record and result are kept
    dlq_retention: float = 7 * 86400.0     # seconds a dead invocation stays in the dead-letter view
    idempotency_ttl: float = 86400.0       # seconds an Idempotency-Key keeps naming its invocation
    async_reclaim_after: float = 30.0      # seconds without a heartbeat before held work is taken over
    async_max_payload: int = 1024 * 1024   # bytes of an async invocation's body; more -> 413
    async_max_result: int = 6 * 1024 * 1024  # bytes of a result kept; more -> the invocation fails
    # traces (docs/tracing.md): spans go over OTLP/HTTP to this URL; None: tracing is off
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = 1.0        # share of new traces kept (a caller's sampled flag wins)
    # metrics (docs/metrics.md)
    metrics: bool = True                   # record per-minute rows and histograms (0: counters only)
    metrics_retention: float = 7 * 86400.0  # seconds per-minute metrics are kept
    metrics_flush_interval: float = 5.0    # seconds between writes of the gathered rows to Redis

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "GatewaySettings":
        """GANTRY_REDIS_URL, GANTRY_GATEWAY_HOST, GANTRY_GATEWAY_PORT, GANTRY_GATEWAY_ID,
        GANTRY_MAX_BODY ("6Mi", or bytes; at most 1Gi), GANTRY_COLD_START_TIMEOUT ("30s", or seconds),
        GANTRY_ENGINE_COLD_START_TIMEOUT ("5m"),
        GANTRY_RATE_LIMIT, GANTRY_RATE_BURST, GANTRY_ADMIN_RATE_LIMIT, GANTRY_ADMIN_RATE_BURST,
        GANTRY_COORD_RATE_LIMIT, GANTRY_COORD_RATE_BURST, GANTRY_AUTH_FAILURE_RATE, GANTRY_AUTH_FAILURE_BURST, GANTRY_HEADER_TIMEOUT ("10s"; "0s": none),
        GANTRY_KEEPALIVE_TIMEOUT ("75s"), GANTRY_METRICS_PUBLIC ("1" or "0"), GANTRY_ADMIN_KEY_HASH,
        GANTRY_USAGE_FLUSH_INTERVAL ("5s"), GANTRY_PRICES (a JSON object, or the path of a file
        holding one), GANTRY_ASYNC_DISPATCH ("1" or "0"), GANTRY_DISPATCH_ID, GANTRY_ASYNC_RETENTION
        ("24h"), GANTRY_ASYNC_DLQ_RETENTION ("7d"), GANTRY_IDEMPOTENCY_TTL ("24h"),
        GANTRY_ASYNC_RECLAIM_AFTER ("30s"), GANTRY_ASYNC_MAX_PAYLOAD ("1Mi"), GANTRY_ASYNC_MAX_RESULT ("6Mi"),
        GANTRY_OTLP_ENDPOINT (else OTEL_EXPORTER_OTLP_ENDPOINT), GANTRY_TRACE_SAMPLE_RATIO ("0.1"),
        GANTRY_METRICS ("1" or "0"), GANTRY_METRICS_RETENTION ("7d"), GANTRY_METRICS_FLUSH_INTERVAL ("5s");
        keyword arguments (flags) win over the environment."""
        e = Env(env)
        key_hash = e.text("GANTRY_ADMIN_KEY_HASH")
        public = e.choice("GANTRY_METRICS_PUBLIC", _FLAGS)
        dispatch = e.choice("GANTRY_ASYNC_DISPATCH", _FLAGS)
        recording = e.choice("GANTRY_METRICS", _FLAGS)
        settings = cls(**given({
            "redis_url": env_redis_url(e.env),
            "workers": e.integer("GANTRY_GATEWAY_WORKERS", lo=1, hi=MAX_WORKERS),
            "worker_index": e.integer("GANTRY_GATEWAY_WORKER_INDEX", lo=0, hi=MAX_WORKERS - 1),
            "host": e.text("GANTRY_GATEWAY_HOST"),
            "port": e.integer("GANTRY_GATEWAY_PORT", lo=0, hi=65535),
            "gateway_id": e.text("GANTRY_GATEWAY_ID"),
            "max_body": e.size("GANTRY_MAX_BODY", lo=1, hi=MAX_BODY),
            "cold_start_timeout": e.duration("GANTRY_COLD_START_TIMEOUT"),
            "engine_cold_start_timeout": e.duration("GANTRY_ENGINE_COLD_START_TIMEOUT"),
            "rate_limit": e.number("GANTRY_RATE_LIMIT", what="a number of requests per second"),
            "rate_burst": e.number("GANTRY_RATE_BURST", what="a number of requests"),
            "admin_rate_limit": e.number("GANTRY_ADMIN_RATE_LIMIT", what="a number of requests per second"),
            "admin_rate_burst": e.number("GANTRY_ADMIN_RATE_BURST", what="a number of requests"),
            "coord_rate_limit": e.number("GANTRY_COORD_RATE_LIMIT", what="a number of requests per second"),
            "coord_rate_burst": e.number("GANTRY_COORD_RATE_BURST", what="a number of requests"),
            "auth_failure_rate": e.number("GANTRY_AUTH_FAILURE_RATE", what="a number of failures per second"),
            "auth_failure_burst": e.number("GANTRY_AUTH_FAILURE_BURST", what="a number of failures"),
            "header_timeout": e.duration("GANTRY_HEADER_TIMEOUT", allow_zero=True),
            "keepalive_timeout": e.duration("GANTRY_KEEPALIVE_TIMEOUT"),
            "metrics_public": None if public is None else public in ("1", "true", "yes"),
            "admin_key_hash": key_hash.lower() if key_hash else None,
            "usage_flush_interval": e.duration("GANTRY_USAGE_FLUSH_INTERVAL"),
            "prices": e.parsed("GANTRY_PRICES", read_prices),
            "async_dispatch": None if dispatch is None else dispatch in ("1", "true", "yes"),
            "dispatch_id": e.text("GANTRY_DISPATCH_ID"),
            "async_retention": e.duration("GANTRY_ASYNC_RETENTION"),
            "dlq_retention": e.duration("GANTRY_ASYNC_DLQ_RETENTION"),
            "idempotency_ttl": e.duration("GANTRY_IDEMPOTENCY_TTL"),
            "async_reclaim_after": e.duration("GANTRY_ASYNC_RECLAIM_AFTER"),
            "async_max_payload": e.size("GANTRY_ASYNC_MAX_PAYLOAD", lo=1, hi=MAX_BODY),
            "async_max_result": e.size("GANTRY_ASYNC_MAX_RESULT", lo=1, hi=MAX_BODY),
            "otlp_endpoint": (e.parsed("GANTRY_OTLP_ENDPOINT", traces_url)
                              or e.parsed("OTEL_EXPORTER_OTLP_ENDPOINT", traces_url)),
            "trace_sample_ratio": e.parsed("GANTRY_TRACE_SAMPLE_RATIO", sample_ratio),
            "metrics": None if recording is None else recording in ("1", "true", "yes"),
            "metrics_retention": e.duration("GANTRY_METRICS_RETENTION"),
            "metrics_flush_interval": e.duration("GANTRY_METRICS_FLUSH_INTERVAL"),
        }, overrides))
        if settings.workers > 1 and settings.port == 0:
            raise SettingsError("GANTRY_GATEWAY_WORKERS above 1 needs a fixed GANTRY_GATEWAY_PORT: every worker "
                                "binds the same port (SO_REUSEPORT), and port 0 would give each its own")
        gateway_id, dispatch_id = worker_identity(settings.gateway_id, settings.dispatch_id, settings.workers,
                                                  settings.worker_index)
        return replace(settings, gateway_id=gateway_id, dispatch_id=dispatch_id)


def read_prices(value: str) -> Prices:
    """GANTRY_PRICES: a JSON object (it starts with "{"), else the path of a file holding one."""
    text = value
    if not value.lstrip().startswith("{"):
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ValueError(f"expected a JSON object or the path of a file holding one; "
                             f"cannot read {value[:80]!r} ({exc.strerror})") from None
    return parse_prices(text)


def traces_url(value: str) -> str:
    """An OTLP/HTTP endpoint: the collector's base URL (``http://collector:4318``, as in
    OTEL_EXPORTER_OTLP_ENDPOINT) gets ``/v1/traces``; a URL already ending in it is kept."""
    from urllib.parse import urlsplit
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {value[:80]!r}")
    return value if parts.path.rstrip("/").endswith("/v1/traces") else value.rstrip("/") + "/v1/traces"


def sample_ratio(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"expected a number from 0 to 1, got {value[:40]!r}")
    return ratio

"""gantry.toml -> FunctionSpec, validated, with errors that name the file, field and expectation.

The spec is also what the admin API stores and the scheduler reads, so it round-trips
through plain dicts (``to_dict``/``from_dict``) with the same validation.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from gantry_runtime.wire import parse_handler

from .quantities import format_size, parse_duration, parse_size

MANIFEST = "gantry.toml"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# A function's qualified name (gantry.tenants.model.qualify): NAME, or TENANT.NAME.
QUALIFIED_RE = re.compile(r"^(?:[a-z][a-z0-9-]{0,30}\.)?[a-z][a-z0-9-]{0,62}$")
RUNTIMES = ("python3.11", "vllm")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
TENANT_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")      # gantry.tenants.model.TENANT_ID_RE
DEFAULT_TENANT = "default"

# The range of every number a spec holds (README "Function manifest" lists them).  The upper
# bounds are far above any real deployment; they exist so that a typo or a hostile value
# (NaN, Infinity, 2**70) is refused here, with its field named, instead of overflowing
# msgpack at deploy or making the scheduler raise on every pass.
MAX_CPU = 1024                    # cores
MIN_MEMORY = 6 * 2**20            # Docker's minimum
MAX_MEMORY = 16 * 2**40           # 16Ti
MAX_GPU = 64
MAX_GPU_MEMORY = 2**40            # 1Ti: resources.gpu_memory, a share of one GPU
MIN_GPU_MEMORY = 2**20            # 1Mi: a smaller share is a typo (a number of bytes meant as MiB)
MAX_GPU_TYPES = 8
GPU_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")
MAX_INSTANCES = 10_000            # min_instances, max_instances
MAX_CONCURRENCY = 10_000
MAX_DURATION = 30 * 86400.0       # 30 days: limits.timeout, scaling.idle_timeout, keep_paused, cooldowns
# scaling.target_utilization is in (0, 1]; its floor keeps demand / (concurrency x target)
# within MAX_INSTANCES' reach of sense (0.01: each instance runs at 1% of its concurrency).
MIN_UTILIZATION = 0.01
# limits.max_body, and the gateway's GANTRY_MAX_BODY: the gateway and the runtime each hold a
# whole request body in memory, so this is a bound on one request's memory, not on traffic.
MAX_BODY = 2**30                  # 1Gi


class ManifestError(ValueError):
    """A manifest problem; str() reads "FILE: FIELD: what was expected"."""

    def __init__(self, source: str, field_name: str, message: str):
        self.source, self.field, self.message = source, field_name, message
        super().__init__(f"{source}: {field_name}: {message}" if field_name else f"{source}: {message}")


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.5                 # cores: the container's hard limit (CFS quota)
    memory: int = 512 * 2**20        # bytes: the limit, and what placement reserves
    gpu: int = 0                     # whole GPUs
    gpu_memory: int = 0              # bytes of ONE GPU's memory, shared with others (0: none); never with gpu
    # GPU names placement prefers, best first, each matched case-insensitively as a part of
    # the GPU's name ("H100" matches "NVIDIA H100 80GB HBM3"); empty: any GPU.
    gpu_type: tuple[str, ...] = ()
    # cores placement reserves on a node (0: the same as cpu).  Nodes offer their CPUs times an
    # overcommit factor (GANTRY_CPU_OVERCOMMIT), so idle functions do not hold cores they never use.
    cpu_request: float = 0.0

    @property
    def cpu_request_millis(self) -> int:
        return int(round((self.cpu_request or self.cpu) * 1000))

    @property
    def wants_gpu(self) -> bool:
        return self.gpu > 0 or self.gpu_memory > 0


@dataclass(frozen=True)
class Scaling:
    min_instances: int = 0
    max_instances: int = 10
    concurrency: int = 4             # requests in flight per instance
    idle_timeout: float = 60.0       # seconds
    keep_paused: float = 300.0       # seconds a scaled-down instance stays paused (0: never paused)
    # Scaling policy (docs/control-plane.md "Scaling"): instances are sized so each runs at
    # this fraction of its concurrency; 1.0 fills them (ceil(demand / concurrency)).
    target_utilization: float = 1.0
    scale_up_cooldown: float = 0.0   # seconds after a scale-up before the next one (0: none)
    scale_down_cooldown: float = 0.0  # seconds after any change before a scale-down (0: none)


@dataclass(frozen=True)
class Limits:
    timeout: float = 30.0            # seconds per invocation
    # request body bytes (more -> 413); 0: the gateway's GANTRY_MAX_BODY.  Responses have no
    # limit: a stream goes on as long as the handler yields.
    max_body: int = 0


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0             # seconds before the first retry
    max: float = 60.0                # each retry waits twice the one before, up to this


@dataclass(frozen=True)
class AsyncPolicy:
    """[async]: how an async invocation of the function is retried (docs/async.md)."""
    max_retries: int = 2             # retries after the first attempt (Lambda's default)
    backoff: Backoff = field(default_factory=Backoff)
    max_event_age: float = 6 * 3600.0   # seconds an invocation may wait to run before it expires


@dataclass(frozen=True)
class Schedule:
    """One [[schedules]] entry: a cron expression, fired as an async invocation."""
    name: str
    cron: str
    timezone: str = "UTC"
    payload: Any = None              # the event (JSON); None sends an empty body
    priority: str = "normal"


# [model] of a vllm function (docs/vllm.md).  ``source``: "function" when ``path`` is a folder
# of the function directory (copied into the image under /app), "node" when it names a folder
# under the node's models directory (GANTRY_MODELS_DIR, mounted read-only at MODELS_MOUNT).
MODEL_SOURCES = ("function", "node")
MODELS_MOUNT = "/models"
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
MAX_MODEL_LEN = 10_000_000
MAX_ENGINE_ARGS = 64
# What the platform sets on the engine and a manifest must not override: the port and host
# the worker probes and publishes, and the key the gateway authenticates with.
RESERVED_ENGINE_ARGS = ("--port", "--host", "--api-key", "--uds", "--served-model-name", "--model")
MODEL_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


@dataclass(frozen=True)
class Model:
    path: str
    source: str = "function"
    served_name: str = ""             # "" : the function's name
    max_model_len: int = 0            # 0: the model's own
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.0   # 0: derived from resources.gpu_memory, else vLLM's default
    engine_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str
    runtime: str = "python3.11"
    resources: Resources = field(default_factory=Resources)
    scaling: Scaling = field(default_factory=Scaling)
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    # [secrets]: environment variable -> the name of one of the tenant's secrets; the worker
    # delivers the values at start (docs/tenants.md "Secrets"), never through the spec.
    secrets: dict[str, str] = field(default_factory=dict)
    async_policy: AsyncPolicy = field(default_factory=AsyncPolicy)      # [async]
    schedules: tuple[Schedule, ...] = ()                                # [[schedules]]
    model: Model | None = None                                          # [model], vllm only
    # The owner, set by the gateway from the deploying key (never from a manifest).
    tenant: str = DEFAULT_TENANT

    @property
    def qualified(self) -> str:
        """The name every record of the function carries (gantry.tenants.model.qualify)."""
        return self.name if self.tenant == DEFAULT_TENANT else f"{self.tenant}.{self.name}"

    @property
    def handler_module(self) -> str:
        return parse_handler(self.handler).module

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["async"] = d.pop("async_policy")        # the manifest's name for it
        d["resources"]["gpu_type"] = list(self.resources.gpu_type)   # as msgpack gives it back
        d["schedules"] = [{k: v for k, v in s.items() if v is not None} for s in d["schedules"]]
        if d["model"] is None:
            del d["model"]
        else:
            d["model"]["engine_args"] = list(d["model"]["engine_args"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "spec") -> "FunctionSpec":
        return _validate(data, source, stored=True)

    def to_toml_dict(self) -> dict[str, Any]:
        """The manifest form: sizes and durations written as a person would."""
        d = self.to_dict()
        del d["tenant"]
        d["resources"]["memory"] = format_size(self.resources.memory)
        d["resources"]["gpu_memory"] = format_size(self.resources.gpu_memory)
        d["scaling"]["idle_timeout"] = f"{self.scaling.idle_timeout:g}s"
        d["scaling"]["keep_paused"] = f"{self.scaling.keep_paused:g}s"
        d["scaling"]["scale_up_cooldown"] = f"{self.scaling.scale_up_cooldown:g}s"
        d["scaling"]["scale_down_cooldown"] = f"{self.scaling.scale_down_cooldown:g}s"
        d["limits"]["timeout"] = f"{self.limits.timeout:g}s"
        d["limits"]["max_body"] = format_size(self.limits.max_body)
        a = d["async"]
        a["max_event_age"] = f"{self.async_policy.max_event_age:g}s"
        a["backoff"] = {k: f"{v:g}s" for k, v in a["backoff"].items()}
        return d


_TOP = {"name", "handler", "runtime", "resources", "scaling", "limits", "env", "secrets", "async", "schedules",
        "model"}
_SECTIONS = {
    "resources": {"cpu", "cpu_request", "memory", "gpu", "gpu_memory", "gpu_type"},
    "scaling": {"min_instances", "max_instances", "concurrency", "idle_timeout", "keep_paused",
                "target_utilization", "scale_up_cooldown", "scale_down_cooldown"},
    "limits": {"timeout", "max_body"},
    "async": {"max_retries", "backoff", "max_event_age"},
    "model": {"path", "source", "served_name", "max_model_len", "dtype", "gpu_memory_utilization", "engine_args"},
}
MAX_RETRIES = 100
MAX_SCHEDULES = 64
PRIORITIES = ("high", "normal", "low")
SCHEDULE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def _gpu_types(value: Any, fail) -> tuple[str, ...]:
    """resources.gpu_type: a list of GPU names, best first (a single string is a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) > MAX_GPU_TYPES:
        raise fail("resources.gpu_type", f"expected a list of up to {MAX_GPU_TYPES} GPU names such as "
                                         f"[\"H100\", \"A100\"], got {_shown(value)}")
    for item in items:
        if not isinstance(item, str) or not GPU_TYPE_RE.match(item):
            raise fail("resources.gpu_type", "expected GPU names of letters, digits, space, '.', '_' or '-' "
                                             f"(up to 40), such as \"H100\", got {_shown(item)}")
    if len({i.lower() for i in items}) != len(items):
        raise fail("resources.gpu_type", f"expected each GPU name once, got {_shown(value)}")
    return tuple(items)


def load_manifest(directory: str) -> FunctionSpec:
    """Read DIR/gantry.toml, validate it, and check that the handler's module file exists."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isdir(directory):
        raise ManifestError(directory, "", "not a directory")
    if not os.path.isfile(path):
        raise ManifestError(path, "", f"missing: a function directory needs a {MANIFEST}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, "", f"not valid TOML ({exc})") from None
    spec = _validate(data, path)
    if spec.model is not None:
        return _resolve_model(spec, directory, path)
    module_path = spec.handler_module.replace(".", os.sep)
    if not (os.path.isfile(os.path.join(directory, module_path + ".py"))
            or os.path.isfile(os.path.join(directory, module_path, "__init__.py"))):
        raise ManifestError(path, "handler",
                            f"module {spec.handler_module!r} not found: expected {module_path}.py in {directory}")
    return spec


def _validate(data: dict[str, Any], source: str, stored: bool = False) -> FunctionSpec:
    """A manifest (or, with ``stored``, a stored spec, which also carries its tenant)."""
    def fail(name: str, message: str) -> ManifestError:
        return ManifestError(source, name, message)

    if not isinstance(data, dict):
        raise fail("", "expected a table")
    top = _TOP | {"tenant"} if stored else _TOP
    unknown = sorted(set(data) - top)
    if unknown:
        raise fail(unknown[0], f"unknown key; expected one of {', '.join(sorted(top))}")
    for section, allowed in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise fail(section, "expected a table")
        extra = sorted(set(table) - allowed)
        if extra:
            raise fail(f"{section}.{extra[0]}", f"unknown key; expected one of {', '.join(sorted(allowed))}")

    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise fail("name", f"expected [a-z][a-z0-9-]{{0,62}} (lower-case, starts with a letter), got {name!r}")
    runtime = data.get("runtime", "python3.11")
    if runtime not in RUNTIMES:
        raise fail("runtime", f"expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    handler = data.get("handler", "" if runtime == "vllm" else None)
    if runtime == "vllm":
        # The engine serves the model's OpenAI-compatible API: there is no handler to load.
        if handler != "":
            raise fail("handler", "a vllm function has no handler (the engine serves [model]); remove it")
    else:
        try:
            parse_handler(handler)   # the runtime's own parse: what passes here, it can load
        except ValueError as exc:
            raise fail("handler", str(exc)) from None

    res, sc, lim = data.get("resources", {}), data.get("scaling", {}), data.get("limits", {})

    def number(table: dict, section: str, key: str, default: Any, kind: type, low: float, high: float):
        value = table.get(key, default)
        ok_types = (int, float) if kind is float else (int,)
        if isinstance(value, bool) or not isinstance(value, ok_types) or not low <= value <= high:
            what = "a number" if kind is float else "a whole number"     # (NaN fails both bounds)
            raise fail(f"{section}.{key}", f"expected {what} from {low:g} to {high:g}, got {_shown(value)}")
        return kind(value)

    def quantity(table: dict, section: str, key: str, default: Any, parse, most):
        try:
            return parse(table.get(key, default), most=most)
        except ValueError as exc:
            raise fail(f"{section}.{key}", str(exc)) from None

    resources = Resources(
        cpu=number(res, "resources", "cpu", 0.5, float, 0.01, MAX_CPU),
        memory=quantity(res, "resources", "memory", "512Mi", parse_size, MAX_MEMORY),
        gpu=number(res, "resources", "gpu", 0, int, 0, MAX_GPU),
        cpu_request=number(res, "resources", "cpu_request", 0.0, float, 0.0, MAX_CPU),
        gpu_memory=quantity(res, "resources", "gpu_memory", 0, parse_size, MAX_GPU_MEMORY),
        gpu_type=_gpu_types(res.get("gpu_type", ()), fail),
    )
    if resources.gpu and resources.gpu_memory:
        raise fail("resources.gpu_memory", f"expected either gpu (whole GPUs) or gpu_memory (a share of one GPU), "
                                           f"not both: gpu = {resources.gpu}")
    if 0 < resources.gpu_memory < MIN_GPU_MEMORY:
        raise fail("resources.gpu_memory", f"expected 0 or at least 1Mi (a size such as \"20G\"), "
                                           f"got {_shown(res.get('gpu_memory'))}")
    if resources.gpu_type and not resources.wants_gpu:
        raise fail("resources.gpu_type", "expected only with gpu or gpu_memory: the function asks for no GPU")
    if 0 < resources.cpu_request < 0.01:
        raise fail("resources.cpu_request", f"expected 0 (the same as cpu) or at least 0.01, "
                                            f"got {resources.cpu_request:g}")
    if resources.cpu_request > resources.cpu:
        raise fail("resources.cpu_request", f"expected at most resources.cpu ({resources.cpu:g}), "
                                            f"got {resources.cpu_request:g}")
    if resources.memory < MIN_MEMORY:
        raise fail("resources.memory", f"expected at least 6Mi (Docker's minimum), got {_shown(res.get('memory'))}")
    scaling = Scaling(
        min_instances=number(sc, "scaling", "min_instances", 0, int, 0, MAX_INSTANCES),
        max_instances=number(sc, "scaling", "max_instances", 10, int, 1, MAX_INSTANCES),
        concurrency=number(sc, "scaling", "concurrency", 4, int, 1, MAX_CONCURRENCY),
        idle_timeout=quantity(sc, "scaling", "idle_timeout", "60s", parse_duration, MAX_DURATION),
        keep_paused=quantity(sc, "scaling", "keep_paused", "5m", parse_duration, MAX_DURATION),
        target_utilization=number(sc, "scaling", "target_utilization", 1.0, float, MIN_UTILIZATION, 1.0),
        scale_up_cooldown=quantity(sc, "scaling", "scale_up_cooldown", 0, parse_duration, MAX_DURATION),
        scale_down_cooldown=quantity(sc, "scaling", "scale_down_cooldown", 0, parse_duration, MAX_DURATION),
    )
    if scaling.min_instances > scaling.max_instances:
        raise fail("scaling.min_instances",
                   f"expected at most max_instances ({scaling.max_instances}), got {scaling.min_instances}")
    limits = Limits(timeout=quantity(lim, "limits", "timeout", "30s", parse_duration, MAX_DURATION),
                    max_body=quantity(lim, "limits", "max_body", 0, parse_size, MAX_BODY))
    if limits.timeout <= 0:
        raise fail("limits.timeout", "expected a duration above zero")
    # runtime = "vllm" with gpu = 0 runs the CPU build of the engine (docs/vllm.md).
    model = _model(data.get("model"), runtime, fail)

    env = data.get("env", {})
    if not isinstance(env, dict):
        raise fail("env", "expected a table of NAME = \"value\"")
    def variable(section: str, key: str) -> None:
        if not ENV_NAME_RE.match(key):
            raise fail(f"{section}.{key}", "expected a variable name of letters, digits and _")
        if key.startswith("GANTRY_"):
            raise fail(f"{section}.{key}", "names starting with GANTRY_ are reserved for the platform")

    for key, value in env.items():
        variable("env", key)
        if not isinstance(value, (str, int, float, bool)):
            raise fail(f"env.{key}", f"expected a string, number or boolean, got {type(value).__name__}")
    env = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in env.items()}
    secrets = data.get("secrets", {})
    if not isinstance(secrets, dict):
        raise fail("secrets", "expected a table of VARIABLE = \"secret-name\"")
    for key, value in secrets.items():
        variable("secrets", key)
        if key in env:
            raise fail(f"secrets.{key}", "also set in [env]: a variable comes from one or the other")
        if not isinstance(value, str) or not SECRET_NAME_RE.match(value):
            raise fail(f"secrets.{key}", f"expected the name of a secret ([A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}, "
                                         f"as `gantry secrets set NAME` made it), got {_shown(value)}")
    tenant = data.get("tenant", DEFAULT_TENANT)
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise fail("tenant", f"expected a tenant id, got {_shown(tenant)}")
    asy = data.get("async", {})
    backoff = asy.get("backoff", {})
    if not isinstance(backoff, dict):
        raise fail("async.backoff", 'expected a table like { initial = "1s", max = "1m" }')
    if set(backoff) - {"initial", "max"}:
        raise fail(f"async.backoff.{sorted(set(backoff) - {'initial', 'max'})[0]}",
                   "unknown key; expected one of initial, max")
    policy = AsyncPolicy(
        max_retries=number(asy, "async", "max_retries", 2, int, 0, MAX_RETRIES),
        backoff=Backoff(initial=quantity(backoff, "async.backoff", "initial", "1s", parse_duration, MAX_DURATION),
                        max=quantity(backoff, "async.backoff", "max", "1m", parse_duration, MAX_DURATION)),
        max_event_age=quantity(asy, "async", "max_event_age", "6h", parse_duration, MAX_DURATION))
    if policy.backoff.max < policy.backoff.initial:
        raise fail("async.backoff.max", f"expected at least backoff.initial ({policy.backoff.initial:g}s)")
    if policy.max_event_age <= 0:
        raise fail("async.max_event_age", "expected a duration above zero")
    return FunctionSpec(name=name, handler=handler, runtime=runtime, resources=resources,
                        scaling=scaling, limits=limits, env=env, secrets=dict(secrets), tenant=tenant,
                        async_policy=policy, schedules=_schedules(data.get("schedules", []), fail), model=model)


def _model(table: Any, runtime: str, fail) -> Model | None:
    """[model]: required for runtime = "vllm", refused for any other runtime."""
    if runtime != "vllm":
        if table is not None:
            raise fail("model", f'only a runtime = "vllm" function has a [model] section (runtime is {runtime!r})')
        return None
    if table is None:
        raise fail("model", 'runtime = "vllm" needs a [model] section with at least path = "FOLDER"')
    if not isinstance(table, dict):
        raise fail("model", "expected a table")
    path = table.get("path")
    if not isinstance(path, str) or not MODEL_PATH_RE.match(path) or ".." in path.split("/"):
        raise fail("model.path", f"expected a relative folder (letters, digits, _ . -, parts joined by /), "
                                 f"got {_shown(path)}")
    source = table.get("source", "function")
    if source not in MODEL_SOURCES:
        raise fail("model.source", f"expected one of {', '.join(MODEL_SOURCES)}, got {_shown(source)}")
    served = table.get("served_name", "")
    if not isinstance(served, str) or (served and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$", served)):
        raise fail("model.served_name", f"expected a name of letters, digits and _ . : / -, got {_shown(served)}")
    max_len = table.get("max_model_len", 0)
    if isinstance(max_len, bool) or not isinstance(max_len, int) or not 0 <= max_len <= MAX_MODEL_LEN:
        raise fail("model.max_model_len", f"expected a whole number of tokens from 1 to {MAX_MODEL_LEN} "
                                          f"(0: the model's own), got {_shown(max_len)}")
    dtype = table.get("dtype", "auto")
    if dtype not in DTYPES:
        raise fail("model.dtype", f"expected one of {', '.join(DTYPES)}, got {_shown(dtype)}")
    util = table.get("gpu_memory_utilization", 0.0)
    if isinstance(util, bool) or not isinstance(util, (int, float)) or not (util == 0 or 0.01 <= util <= 1.0):
        raise fail("model.gpu_memory_utilization", f"expected a fraction of the GPU from 0.01 to 1 "
                                                   f"(0: derived), got {_shown(util)}")
    args = table.get("engine_args", [])
    if (not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args)
            or len(args) > MAX_ENGINE_ARGS or any(len(a) > 1000 or "\x00" in a for a in args)):
        raise fail("model.engine_args", f'expected a list of at most {MAX_ENGINE_ARGS} strings, '
                                        f'like ["--enforce-eager", "--max-num-seqs", "8"]')
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_ENGINE_ARGS:
            raise fail("model.engine_args", f"{flag} is set by the platform (the port, host, key and model "
                                            f"come from the worker and [model]); remove it")
    return Model(path=path, source=source, served_name=served, max_model_len=max_len, dtype=dtype,
                 gpu_memory_utilization=float(util), engine_args=tuple(args))


def _resolve_model(spec: FunctionSpec, directory: str, source: str) -> FunctionSpec:
    """A [model] path of the function directory must be a folder there with a config.json;
    a node model (source = "node") is only checked on the node that runs it."""
    model = spec.model
    folder = os.path.join(directory, model.path)
    if model.source == "function":
        if not os.path.isdir(folder):
            raise ManifestError(source, "model.path",
                                f"no folder {model.path!r} in {directory} (for a model in the node's models "
                                f"folder, GANTRY_MODELS_DIR, set source = \"node\")")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ManifestError(source, "model.path", f"{folder} has no config.json: not a model folder")
    return spec


def _schedules(entries: Any, fail) -> tuple[Schedule, ...]:
    """[[schedules]]: each needs a unique name and a cron expression croniter accepts, in an
    IANA time zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    from croniter import croniter

    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise fail("schedules", 'expected [[schedules]] tables (name = "...", cron = "...")')
    if len(entries) > MAX_SCHEDULES:
        raise fail("schedules", f"expected at most {MAX_SCHEDULES} schedules, got {len(entries)}")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"schedules[{i}]"
        extra = sorted(set(entry) - {"name", "cron", "timezone", "payload", "priority"})
        if extra:
            raise fail(f"{where}.{extra[0]}", "unknown key; expected one of cron, name, payload, priority, timezone")
        name = entry.get("name")
        if not isinstance(name, str) or not SCHEDULE_NAME_RE.match(name):
            raise fail(f"{where}.name", f"expected [a-z][a-z0-9-]{{0,62}}, got {_shown(name)}")
        if name in seen:
            raise fail(f"{where}.name", f"{name!r} is already the name of another schedule")
        seen.add(name)
        cron = entry.get("cron")
        if not isinstance(cron, str) or not croniter.is_valid(cron) or len(cron.split()) not in (5, 6):
            raise fail(f"{where}.cron", f'expected a cron expression like "*/5 * * * *" (minute hour day '
                                        f"month weekday, and an optional sixth field of seconds), got {_shown(cron)}")
        tz = entry.get("timezone", "UTC")
        try:
            if not isinstance(tz, str) or not tz:
                raise ValueError
            ZoneInfo(tz)
        except (ValueError, ZoneInfoNotFoundError):
            raise fail(f"{where}.timezone", f'expected an IANA time zone like "Europe/Paris", got {_shown(tz)}') from None
        priority = entry.get("priority", "normal")
        if priority not in PRIORITIES:
            raise fail(f"{where}.priority", f"expected one of {', '.join(PRIORITIES)}, got {_shown(priority)}")
        payload = entry.get("payload")
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError):
            raise fail(f"{where}.payload", "expected a JSON value (a TOML date or time is not one)") from None
        out.append(Schedule(name=name, cron=cron, timezone=tz, payload=payload, priority=priority))
    return tuple(out)


def _shown(value: Any) -> str:
    """repr(value), cut short: an error must not echo a kilobyte of hostile digits."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

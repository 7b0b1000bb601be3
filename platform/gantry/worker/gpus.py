"""The node's GPUs, read with NVML (nvidia-ml-py, ``import pynvml``): UUID, name, memory total
and free, utilisation, MIG mode and the compute processes on each.

No pynvml, no driver or no GPU is an empty inventory, with the reason logged once.  A field
a GPU does not support (utilisation on some boards, MIG mode on any GPU before Ampere) is
reported as unknown, not as a failure.  The NVML object is injected (worker/fakenvml.py in
tests and for GANTRY_FAKE_GPUS); the real one is initialised once and kept for the
process's life, so each heartbeat's refresh costs a few NVML calls per GPU.
"""
from __future__ import annotations

import logging
from typing import Any

from ..state import GpuDevice

log = logging.getLogger("gantry.worker.gpus")

MAX_PROCS = 32          # PIDs kept per GPU in the node record (it stays small)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_nvml() -> tuple[Any | None, str]:
    """The pynvml module, or None and why not."""
    try:
        import pynvml
    except ImportError as exc:
        return None, f"nvidia-ml-py is not installed ({exc})"
    return pynvml, ""


class GpuInventory:
    """Reads the node's GPUs through ``nvml`` (None: pynvml, imported on first use)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready = False
        self.reason = ""            # why the inventory is empty ("" while it is not, or not yet read)
        self._logged: set[str] = set()

    def _once(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        if text not in self._logged:
            self._logged.add(text)
            log.warning(text)

    def _init(self) -> bool:
        if self._ready:
            return True
        if self._nvml is None:
            self._nvml, why = load_nvml()
            if self._nvml is None:
                return self._empty(why)
        try:
            self._nvml.nvmlInit()
        except Exception as exc:      # NVMLError_LibraryNotFound, DriverNotLoaded, an OSError from ctypes
            return self._empty(f"NVML did not initialise: {type(exc).__name__}: {exc}")
        self._ready = True
        return True

    def _empty(self, why: str) -> bool:
        self.reason = why
        self._once("no GPUs: %s", why)
        return False

    def read(self) -> list[GpuDevice]:
        """Every GPU NVML reports, in its order (empty, with ``reason`` set, when none)."""
        if not self._init():
            return []
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:
            self._empty(f"NVML could not count GPUs: {type(exc).__name__}: {exc}")
            return []
        devices = []
        for index in range(count):
            try:
                devices.append(self._device(index))
            except Exception as exc:     # a GPU fallen off the bus: the others still count
                self._once("GPU %d left out: %s: %s", index, type(exc).__name__, exc)
        self.reason = "" if devices else (self.reason or "NVML reports no GPU")
        if not devices:
            self._once("no GPUs: %s", self.reason)
        return devices

    def _device(self, index: int) -> GpuDevice:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = _text(nvml.nvmlDeviceGetName(handle))
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuDevice(uuid=uuid, name=name, memory=int(memory.total), free=int(memory.free),
                         util=self._optional(lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu), -1),
                         mig=self._optional(lambda: int(nvml.nvmlDeviceGetMigMode(handle)[0]), 0),
                         procs=tuple(self._optional(
                             lambda: [int(p.pid) for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)],
                             [])[:MAX_PROCS]))

    def _optional(self, read, unknown):
        """A field the GPU may not support: NVMLError NotSupported (or any NVML error on that
        one call) is ``unknown``; the rest of the device still counts."""
        try:
            return read()
        except Exception as exc:
            if not self._is_not_supported(exc):
                self._once("a GPU field could not be read: %s: %s", type(exc).__name__, exc)
            return unknown

    def _is_not_supported(self, exc: Exception) -> bool:
        code = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", 3)
        return getattr(exc, "value", None) == code

    def close(self) -> None:
        if self._ready:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._ready = False

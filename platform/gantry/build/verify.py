"""Verify a built image before it may be deployed: import the handler inside it.

The check runs ``python3 -m gantry_runtime.check`` in a container of the image with the
instance's hardened settings (worker/containerspec.py: non-root, read-only root, small
/tmp, no capabilities, pids and memory limits, the function's environment) and no network
at all, so it sees the same Python, the same dependencies and the same file system as an
instance will.  Two settings differ on purpose: no network (``network_mode="none"``; a
function that connects at import can skip it while ``GANTRY_PHASE`` is ``check``) and no
CPU quota (the check is a build step on the builder's machine; under a 0.5-CPU quota the
interpreter's start alone takes about a second).

A failure is a BuildError of one line, the cause as the runtime would log it:
``main.py:1: SyntaxError: expected ':'``.
"""
from __future__ import annotations

import dataclasses

import time

from gantry_runtime.check import parse
from gantry_runtime.wire import new_instance_key

from ..manifest import FunctionSpec
from ..quantities import format_size
from ..worker.containerspec import container_kwargs
from .errors import BuildError


class HandlerCheckFailed(BuildError):
    """The handler does not import in the image; ``seconds`` the check took."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds

CHECK_COMMAND = ["python3", "-m", "gantry_runtime.check"]
CHECK_TIMEOUT = 60.0      # seconds an import may take before the deploy is refused
LABEL_CHECK = "gantry.check"


def verify_handler(client, image: str, spec: FunctionSpec, timeout: float = CHECK_TIMEOUT) -> float:
    """Import SPEC's handler inside IMAGE; the seconds it took (container start to exit).
    Raises HandlerCheckFailed with the cause in one line when it does not import."""
    import docker.errors
    import requests.exceptions

    # The check has no secrets (nor network): a handler reading one at import may skip it
    # while GANTRY_PHASE is "check" (docs/tenants.md, "Secrets").
    kwargs = container_kwargs(dataclasses.replace(spec, secrets={}), image, "check", key=new_instance_key(),
                              network="none")
    for unused in ("network", "ports", "name", "nano_cpus", "log_config"):
        kwargs.pop(unused, None)
    kwargs.update(command=CHECK_COMMAND, network_mode="none", labels={LABEL_CHECK: spec.name}, detach=True)
    started = time.monotonic()
    container = client.containers.run(**kwargs)
    try:
        try:
            status = container.wait(timeout=timeout)
        except requests.exceptions.ConnectionError:     # the wait's read timed out
            raise HandlerCheckFailed(f"handler {spec.handler!r}: importing it did not finish within {timeout:g}s",
                                     time.monotonic() - started) from None
        elapsed = time.monotonic() - started
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        result = parse(out)
        if result is None:
            container.reload()
            state = container.attrs.get("State") or {}
            if state.get("OOMKilled") or status.get("StatusCode") == 137:
                raise HandlerCheckFailed(f"handler {spec.handler!r}: importing it ran out of memory "
                                         f"(resources.memory = {format_size(spec.resources.memory)})", elapsed)
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip().splitlines()
            raise HandlerCheckFailed(f"handler {spec.handler!r}: the import check exited with code "
                                     f"{status.get('StatusCode')}" + (f": {err[-1].strip()}" if err else ""), elapsed)
        if not result.get("ok"):
            raise HandlerCheckFailed(str(result.get("error") or "the handler did not import"), elapsed)
        return elapsed
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass

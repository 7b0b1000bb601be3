"""``python3 -m gantry_runtime.check``: import the handler exactly as the runtime does, print
one JSON line saying how it went, exit.

The builder runs it inside the freshly built image (same Python, same dependencies,
read-only root, no network) before a version can be registered, so a handler that cannot
import is refused at deploy time instead of crash-looping at the first invocation.  It
imports nothing heavy: the check of a small function takes a few tens of milliseconds on top
of the container's start.

``GANTRY_PHASE`` is ``check`` during the import (and absent when the runtime serves), so a
function that opens a connection at import (the check has no network) can skip that step.

The line (``RESULT_KEY`` marks it among whatever the function printed)::

    {"gantry_check": 1, "ok": true, "import_ms": 12.3}
    {"gantry_check": 1, "ok": false, "import_ms": 8.1, "error": "main.py:1: SyntaxError: expected ':'"}

``describe`` is also what the runtime puts in its structured start-failure line, so a failure
at start reads the same as one at deploy.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

RESULT_KEY = "gantry_check"
PHASE_ENV, PHASE_CHECK = "GANTRY_PHASE", "check"


def describe(exc: BaseException, code_dir: str, spec: str) -> str:
    """One line: where in the function's code (file:line, relative to CODE_DIR), the type and
    the message.  ``main.py:1: SyntaxError: expected ':'``;
    ``handler 'main:handler': module 'main' has no attribute 'handler' (found: handle)``;
    ``main.py:2: ModuleNotFoundError: No module named 'requests'``."""
    from .loader import HandlerNotCallable, HandlerNotFound

    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, (HandlerNotFound, HandlerNotCallable)):
        return f"handler {spec!r}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{_relative(exc.filename, code_dir)}:{exc.lineno or 0}"
        return f"{where}: {type(exc).__name__}: {exc.msg}"
    where = _where(exc, code_dir)
    return f"{where}: {what}" if where else f"handler {spec!r}: {what}"


def _where(exc: BaseException, code_dir: str) -> str:
    """file:line of the innermost frame of the traceback in the function's own code."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if _inside(frame.filename, code_dir):
            found = f"{_relative(frame.filename, code_dir)}:{frame.lineno}"
    return found


def _inside(path: str, code_dir: str) -> bool:
    # "<frozen os>" is no file: relative to the working directory (the code directory in
    # the image) it would look like one of the function's
    if not code_dir or not os.path.isabs(path):
        return False
    path, root = os.path.normpath(path), os.path.abspath(code_dir)
    return path.startswith(root.rstrip(os.sep) + os.sep)


def _relative(path: str, code_dir: str) -> str:
    return os.path.relpath(path, code_dir) if _inside(path, code_dir) else path


def parse(output: str) -> dict | None:
    """The result line in the check's output (the last one), or None if there is none."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{") and RESULT_KEY in line:
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if isinstance(result, dict) and result.get(RESULT_KEY) == 1:
                return result
    return None


def main() -> int:
    from .loader import load_handler
    from .wire import INSTANCE_KEY_ENV

    spec = os.environ.get("GANTRY_HANDLER", "")
    code_dir = os.environ.get("GANTRY_CODE_DIR", "/app")
    os.environ.pop(INSTANCE_KEY_ENV, None)     # as the runtime does before the import
    os.environ[PHASE_ENV] = PHASE_CHECK
    t0 = time.perf_counter()
    result: dict = {RESULT_KEY: 1, "ok": True}
    try:
        load_handler(code_dir, spec)
    except BaseException as exc:      # SyntaxError, SystemExit at import: all are the answer
        result.update(ok=False, error=describe(exc, code_dir, spec))
    result["import_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    # Never wait for threads the function started at import (a server, a watchdog).
    code = main()
    sys.stderr.flush()
    os._exit(code)

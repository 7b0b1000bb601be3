"""gantry_runtime.check: the handler imported as the runtime does, one JSON line out, and
the one-line cause (file:line in the function's code) that deploy and start failures share."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

RUNTIME = os.path.join(os.path.dirname(__file__), "..", "..", "runtime")


def check(code_dir, handler: str, **env: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gantry_runtime.check"], capture_output=True, text=True,
                          cwd=code_dir, timeout=30,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.path.abspath(RUNTIME),
                               "GANTRY_HANDLER": handler, "GANTRY_CODE_DIR": str(code_dir), **env})
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return lines[-1], time.monotonic() - t0


@pytest.mark.parametrize("files, handler, error", [
    ({"main.py": "def handle(event, ctx)\n    return event\n"}, "main:handle",
     "main.py:1: SyntaxError: expected ':'"),
    ({"main.py": "def handle(event, ctx):\n    return event\n"}, "main:handler",
     "handler 'main:handler': module 'main' has no attribute 'handler' (found: handle)"),
    ({"main.py": "import json\nimport requests_not_installed\n\ndef handle(e, c):\n    pass\n"}, "main:handle",
     "main.py:2: ModuleNotFoundError: No module named 'requests_not_installed'"),
    # raised inside the standard library (os.environ): the line is the function's own, never
    # "<frozen os>", which relative to the working directory would look like a file of it
    ({"main.py": "import os\n\nURL = os.environ['GANTRY_TEST_UNSET_VARIABLE']\n\ndef handle(e, c):\n    pass\n"},
     "main:handle", "main.py:3: KeyError: 'GANTRY_TEST_UNSET_VARIABLE'"),
    ({"main.py": "from lib import load\nX = load()\ndef handle(e, c):\n    pass\n",
      "lib.py": "def load():\n    raise RuntimeError('no model file')\n"}, "main:handle",
     "lib.py:2: RuntimeError: no model file"),
    ({"app/__init__.py": "", "app/main.py": "class App:\n    pass\n"}, "app.main:App.run",
     "handler 'app.main:App.run': class 'App' has no attribute 'run' (it defines no public callable)"),
    ({"main.py": "handle = {'not': 'callable'}\n"}, "main:handle",
     "handler 'main:handle': main.handle is a dict, not a callable"),
    ({"main.py": "def handle(e, c):\n    pass\n"}, "mian:handle",
     "handler 'mian:handle': ModuleNotFoundError: No module named 'mian'"),
])
def test_a_failed_import_is_one_line_with_where(tmp_path, files, handler, error):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result, _ = check(tmp_path, handler)
    assert result["gantry_check"] == 1 and result["ok"] is False
    assert result["error"] == error


def test_a_good_handler_passes_quickly_and_phase_is_check(tmp_path):
    (tmp_path / "main.py").write_text(
        "import os, threading, time\n"
        "assert os.environ['GANTRY_PHASE'] == 'check'\n"
        "assert 'GANTRY_INSTANCE_KEY' not in os.environ\n"
        "print('hello from import')\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()   # never waited for\n"
        "def handle(e, c):\n    pass\n")
    result, seconds = check(tmp_path, "main:handle", GANTRY_INSTANCE_KEY="k")
    assert result["ok"] is True and result["import_ms"] < 1000
    assert seconds < 5

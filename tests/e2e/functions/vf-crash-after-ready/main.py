"""Imports and serves, then its background worker dies and takes the process with it
(the fail-fast pattern: a thread that cannot go on ends the process), CRASH_AFTER seconds
after the import."""
import os
import sys
import threading
import time

CRASH_AFTER = float(os.environ.get("CRASH_AFTER", "2"))


def _refresh_model():
    time.sleep(CRASH_AFTER)
    try:
        raise ConnectionError("model server at 10.0.0.7:9000 refused the connection")
    except ConnectionError as exc:
        print(f"fatal: model refresh failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)


threading.Thread(target=_refresh_model, daemon=True).start()


def handle(event, ctx):
    time.sleep(float((event or {}).get("sleep", 0)))
    return {"ok": True}

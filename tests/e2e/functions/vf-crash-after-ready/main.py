"""Imports and serves, then its background worker dies and takes the process with it
(the fail-fast pattern: a thread that cannot go on prints its traceback, logs that it
exits, and ends the process), CRASH_AFTER seconds after the import."""
import logging
import os
import sys
import threading
import time
import traceback

CRASH_AFTER = float(os.environ.get("CRASH_AFTER", "2"))
log = logging.getLogger("model")


def _refresh_model():
    time.sleep(CRASH_AFTER)
    try:
        raise ConnectionError("model server at 10.0.0.7:9000 refused the connection")
    except ConnectionError:
        traceback.print_exc()                          # stderr: ends with the exception line
        sys.stderr.flush()
        # Docker reads stdout and stderr on separate pipes and stamps each line as it reads
        # it; a pause keeps the order the process wrote them in.
        time.sleep(0.2)
        log.error("model refresh failed; exiting")    # stdout, as a JSON line: the last line logged
        os._exit(1)


threading.Thread(target=_refresh_model, daemon=True).start()


def handle(event, ctx):
    time.sleep(float((event or {}).get("sleep", 0)))
    return {"ok": True}

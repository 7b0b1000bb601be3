"""Takes a while to import, so a test can see /healthz say "starting"."""
import os
import time

time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "1.5")))

NOT_CALLABLE = 42


def handle(event, ctx):
    return {"ready": True}

"""A handler that raises (when asked) and otherwise answers."""
import os


def handle(event, ctx):
    if event.get("fail"):
        raise ValueError("boom")
    return {"ok": True, "pid": os.getpid()}


def exits(event, ctx):
    raise SystemExit(7)

"""Connects to its database at import, as many functions do.  The deploy check has no
network, so the connection is skipped while GANTRY_PHASE is "check"; at run time the
function reads DATABASE_URL, which its manifest forgot to set: it fails at start only."""
import os

if os.environ.get("GANTRY_PHASE") != "check":
    DATABASE_URL = os.environ["DATABASE_URL"]


def handle(event, ctx):
    return {"db": DATABASE_URL}

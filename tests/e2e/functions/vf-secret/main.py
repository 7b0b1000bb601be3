"""Reads its secret as libraries do (os.environ) and answers what the test checks, never the
value itself: its SHA-256, and whether it is also where it must not be."""
import hashlib
import os

AT_IMPORT = os.environ.get("OPENAI_API_KEY", "")     # the runtime sets it before the import


def handle(event, ctx):
    value = os.environ.get("OPENAI_API_KEY", "")
    initial = b""
    for pid in ("self", "1"):                          # this process, and the init (tini) above it
        with open(f"/proc/{pid}/environ", "rb") as f:
            initial += f.read()
    files = sorted(os.listdir("/run/secrets"))
    return {
        "sha256": hashlib.sha256(value.encode()).hexdigest(),
        "at_import": AT_IMPORT == value != "",
        "in_proc_environ": bool(value) and value.encode() in initial,
        "files": files,
        "uid": os.getuid(),
        "secret_vars": os.environ.get("GANTRY_SECRET_VARS", ""),
    }

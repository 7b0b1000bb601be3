"""Sync handler: JSON (or bytes) in, JSON out, with what ctx says."""
import os


def handle(event, ctx):
    ctx.logger.info("echo called", extra={"kind": type(event).__name__})
    if isinstance(event, (bytes, bytearray)):
        event = {"bytes": len(event)}
    return {"event": event, "invocation_id": ctx.invocation_id, "tenant": ctx.tenant,
            "function": ctx.function, "remaining": ctx.remaining(), "deadline": ctx.deadline,
            "pid": os.getpid()}


def pid(event, ctx):
    return os.getpid()

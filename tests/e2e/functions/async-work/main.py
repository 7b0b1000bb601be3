"""Async work for the fault tests: logs a line when an attempt starts (the tests count them
per invocation id in the shipped logs), sleeps, and fails on request."""
import time


def work(event, ctx):
    event = event or {}
    ctx.logger.info("attempt started")
    time.sleep(float(event.get("sleep", 0)))
    if event.get("fail"):
        raise RuntimeError(f"poison {event.get('n')}")
    if event.get("status"):
        from gantry_runtime import Response
        return Response({"n": event.get("n")}, status=int(event["status"]))
    return {"n": event.get("n"), "invocation_id": ctx.invocation_id}

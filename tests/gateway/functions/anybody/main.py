import time


def describe(event, ctx):
    """Any body is fine: JSON arrives decoded, anything else as bytes; the answer says which.
    Two keys a fuzzer will not guess make it fail on purpose: __raise and __sleep (seconds)."""
    if isinstance(event, dict) and "__raise" in event:
        raise ValueError(str(event["__raise"]))
    if isinstance(event, dict) and "__sleep" in event:
        time.sleep(min(float(event["__sleep"]), 5))
    size = len(event) if isinstance(event, (bytes, str, list, dict)) else None
    return {"type": type(event).__name__, "size": size}


def stream(event, ctx):
    """Three JSON lines, streamed (application/x-ndjson)."""
    for i in range(3):
        yield {"i": i}

"""Yields ``count`` lines (default 5), ``delay`` seconds apart (default 0.05).

A plain generator: the runtime runs each step in a worker thread and sends every line as
one HTTP chunk the moment it is yielded (Content-Type text/plain, X-Gantry-Stream: 1).
"""
import time

MAX_COUNT = 1000


def handle(event, ctx):
    event = event if isinstance(event, dict) else {}
    count = max(0, min(int(event.get("count", 5)), MAX_COUNT))
    delay = max(0.0, float(event.get("delay", 0.05)))
    for i in range(count):
        if i:
            time.sleep(delay)
        yield f"chunk {i}\n"

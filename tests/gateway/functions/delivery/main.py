import os
import time


def _side_effect(event):
    os.write(1, f"SIDE-EFFECT {event['tag']}\n".encode())   # unbuffered: it survives os._exit


def effect(event, ctx):
    """The side effect, then (after ``seconds``) a normal answer."""
    _side_effect(event)
    time.sleep(event.get("seconds", 0))
    return {"tag": event["tag"]}


def effect_then_exit(event, ctx):
    """The side effect, then the process is gone before any answer."""
    _side_effect(event)
    os._exit(1)


def effect_then_hog(event, ctx):
    """The side effect, then memory past the container's limit: the kernel kills it."""
    _side_effect(event)
    hog = []
    while True:
        hog.append(b"x" * (16 << 20))   # written, so every page counts

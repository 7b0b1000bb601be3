"""Generators and async generators; each logs when it is closed early."""
import asyncio
import time


def lines(event, ctx):
    """Sync generator: ``n`` str lines, ``every`` seconds apart."""
    try:
        for i in range(event.get("n", 5)):
            if i:
                time.sleep(event.get("every", 0))
            yield f"line {i}\n"
    except GeneratorExit:
        ctx.logger.info("generator closed")
        raise


async def records(event, ctx):
    """Async generator: ``n`` JSON records, ``every`` seconds apart."""
    try:
        for i in range(event.get("n", 5)):
            if i:
                await asyncio.sleep(event.get("every", 0))
            yield {"i": i}
    except (GeneratorExit, asyncio.CancelledError) as exc:
        ctx.logger.info("async generator closed", extra={"how": type(exc).__name__})
        raise


async def blobs(event, ctx):
    for i in range(3):
        yield bytes([i]) * 4


def fails(event, ctx):
    yield "first\n"
    yield "second\n"
    raise ValueError("mid-stream")


def empty(event, ctx):
    return
    yield


def bad_item(event, ctx):
    yield "ok\n"
    yield {1, 2}

"""Async handlers."""
import asyncio


async def handle(event, ctx):
    await asyncio.sleep(0.01)
    return {"async": True, "event": event}


async def watch_cancel(event, ctx):
    """Sleeps; logs when it is cancelled (the client went away) so a test can see it."""
    try:
        await asyncio.sleep(event.get("seconds", 10))
    except asyncio.CancelledError:
        ctx.logger.info("handler cancelled")
        raise
    return {"slept": True}

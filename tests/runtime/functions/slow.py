"""Slow handlers for timeout, capacity and drain tests: sleep ``event["seconds"]``."""
import asyncio
import time


def sync(event, ctx):
    time.sleep(event["seconds"])
    return {"slept": event["seconds"]}


async def aio(event, ctx):
    await asyncio.sleep(event["seconds"])
    return {"slept": event["seconds"]}

"""Returns the request body reversed, as application/octet-stream.

An async handler: it runs on the event loop, so it must not block.
"""


async def handle(event, ctx):
    if not isinstance(event, (bytes, bytearray)):
        raise TypeError("send a non-JSON body (e.g. Content-Type: application/octet-stream)")
    return bytes(reversed(event))

"""A handler that uses aiohttp's client at import and in a call: the runtime itself imports
no aiohttp (its server is gantry_runtime.httpserver), and the package is there, whole."""
import sys

import aiohttp
from aiohttp import ClientTimeout

TIMEOUT = ClientTimeout(total=1)


def handle(event, ctx):
    return {
        "version": aiohttp.__version__,
        "session": aiohttp.ClientSession.__module__ + "." + aiohttp.ClientSession.__name__,
        "timeout": TIMEOUT.total,
        "client_imported": "aiohttp.client" in sys.modules,
    }

"""A handler that uses aiohttp's client at import and in a call: the runtime imported only
aiohttp's server modules (gantry_runtime.webimport), and the package must still be whole."""
import sys

import aiohttp
from aiohttp import ClientTimeout

TIMEOUT = ClientTimeout(total=1)


def handle(event, ctx):
    return {
        "version": aiohttp.__version__,
        "session": aiohttp.ClientSession.__module__ + "." + aiohttp.ClientSession.__name__,
        "timeout": TIMEOUT.total,
        "same_web": sys.modules["aiohttp.web"] is aiohttp.web,
        "client_imported": "aiohttp.client" in sys.modules,
    }

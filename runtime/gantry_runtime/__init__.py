"""gantry_runtime: the in-container server that runs one function's handler.

Run as ``python3 -m gantry_runtime``. It imports nothing heavy at package import so that
``import gantry_runtime`` stays cheap; the server modules load in ``__main__``.
"""

__version__ = "0.1.0"

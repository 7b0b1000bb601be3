"""Import aiohttp's server without its client, for a fast start (docs/runtime.md, "Start-up").

``import aiohttp.web`` runs ``aiohttp/__init__.py`` first, which imports the whole client
(``aiohttp.client``, its connector, cookie jar, resolver ...) and builds two SSL contexts by
reading the CA bundle; the runtime serves without any of it.  Measured with ``python -X
importtime`` inside the runtime image, the runtime's imports take half as long without it
(docs/benchmarks.md, "Runtime start-up").
So ``import_server()`` puts the package in ``sys.modules`` without running its
``__init__`` and imports ``aiohttp.web`` (the server modules) into it.

The package stays whole for anyone else: the first attribute it is asked for that the
server modules did not set (``aiohttp.ClientSession`` in a handler, ``from aiohttp import
...``) runs the real ``__init__`` into the same module object, once, under a lock, and
answers from it.  If the server modules cannot be imported this way (a future aiohttp
reorganised), the partial package is dropped and aiohttp is imported as usual: slower, never
broken.  Only ``python3 -m gantry_runtime`` calls this; importing the runtime's modules as a
library (the tests, the platform) imports aiohttp as usual.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import threading
from types import ModuleType
from typing import Any, Callable

PACKAGE = "aiohttp"
SERVER = PACKAGE + ".web"
_VERSION = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.M)


def import_server() -> bool:
    """Import ``aiohttp.web``; True when it came without running the package's ``__init__``
    (so without the client)."""
    if PACKAGE in sys.modules:   # imported already (as a whole, or by an earlier call)
        importlib.import_module(SERVER)
        return False
    made = _partial_package()
    if made is None:
        importlib.import_module(SERVER)
        return False
    package, partial_getattr = made
    sys.modules[PACKAGE] = package
    try:
        importlib.import_module(SERVER)
    except Exception:   # noqa: BLE001 - fall back to the ordinary import, which raises for real
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        importlib.import_module(SERVER)
        return False
    return package.__dict__.get("__getattr__") is partial_getattr


def _partial_package() -> tuple[ModuleType, Callable[[str], Any]] | None:
    """The aiohttp package module, its ``__init__`` not run, completing itself on first use;
    and the ``__getattr__`` that does it (replaced by aiohttp's own once it has)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not spec.origin or spec.submodule_search_locations is None:
        return None
    try:
        with open(spec.origin, encoding="utf-8") as f:
            found = _VERSION.search(f.read())
    except OSError:
        return None
    if found is None:   # aiohttp.http reads the package's __version__ at import
        return None
    module = importlib.util.module_from_spec(spec)
    module.__version__ = found.group(1)
    submodules = _submodules(spec.submodule_search_locations)
    lock = threading.RLock()
    running = []   # non-empty while the real __init__ runs (in the thread holding the lock)

    def __getattr__(name: str):
        if name in submodules:
            # ``from . import hdrs`` in aiohttp's own modules asks the package first: answer
            # with the submodule (imported now if need be), never by running __init__, which
            # imports modules that may be half-imported at this point.
            return importlib.import_module(f"{PACKAGE}.{name}")
        with lock:
            if module.__dict__.get("__getattr__") is __getattr__ and not running:
                running.append(True)
                try:
                    spec.loader.exec_module(module)   # replaces this __getattr__ with aiohttp's own
                finally:
                    running.clear()
        if name in module.__dict__:
            return module.__dict__[name]
        own = module.__dict__.get("__getattr__")
        if own is not None and own is not __getattr__:
            return own(name)
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__
    return module, __getattr__


def _submodules(locations) -> frozenset[str]:
    """The names of the modules and packages in the package's directories."""
    names = set()
    for where in locations:
        try:
            entries = os.listdir(where)
        except OSError:
            continue
        for entry in entries:
            stem = entry.split(".", 1)[0]
            if entry.endswith((".py", ".so")) or ("." not in entry and entry != "__pycache__"
                                                   and os.path.isdir(os.path.join(where, entry))):
                if stem.isidentifier() and stem != "__init__":
                    names.add(stem)
    return frozenset(names)

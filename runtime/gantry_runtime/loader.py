"""Import the user's handler once: ``module:callable`` with the code directory on sys.path."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from .wire import parse_handler


def load_handler(code_dir: str, spec: str) -> Callable[..., Any]:
    """Return the callable named by ``spec`` ("module:callable", the callable may be dotted).

    Errors are the original ones (ModuleNotFoundError, SyntaxError, AttributeError for a
    missing callable, TypeError for a non-callable) so the caller can log them as they are;
    a malformed spec is a ValueError.
    """
    module_name, attr = parse_handler(spec)
    if code_dir and code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = getattr(obj, "__name__", type(obj).__name__)
            raise AttributeError(f"{owner!r} has no attribute {part!r} (handler {spec!r})") from None
    if not callable(obj):
        raise TypeError(f"handler {spec!r} is a {type(obj).__name__}, not a callable")
    return obj

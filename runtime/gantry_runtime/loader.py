"""Import the user's handler once: ``module:callable`` with the code directory on sys.path."""
from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any, Callable

from .wire import parse_handler


class HandlerNotFound(AttributeError):
    """The module imported but has no such attribute; the message lists what it has."""


class HandlerNotCallable(TypeError):
    """The attribute exists but cannot be called."""


def load_handler(code_dir: str, spec: str) -> Callable[..., Any]:
    """Return the callable named by ``spec`` ("module:callable", the callable may be dotted).

    Errors are the original ones (ModuleNotFoundError, SyntaxError, anything raised at
    import), or HandlerNotFound (an AttributeError) for a missing callable and
    HandlerNotCallable (a TypeError) for one that is not callable, so the caller can log them
    as they are; a malformed spec is a ValueError.
    """
    module_name, attr = parse_handler(spec)
    if code_dir and code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            kind = "module" if inspect.ismodule(obj) else "class" if inspect.isclass(obj) else type(obj).__name__
            owner = getattr(obj, "__name__", type(obj).__name__)
            raise HandlerNotFound(f"{kind} {owner!r} has no attribute {part!r} ({_found(obj, part)})") from None
    if not callable(obj):
        kind = type(obj).__name__
        raise HandlerNotCallable(f"{module_name}.{attr} is {'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}, "
                                 "not a callable")
    return obj


def _found(owner: Any, wanted: str, limit: int = 5) -> str:
    """The public callables OWNER defines, the closest to WANTED first: "found: handle"."""
    here = getattr(owner, "__name__", None) if inspect.ismodule(owner) else None
    names = []
    for name in dir(owner):
        if name.startswith("_"):
            continue
        try:
            value = getattr(owner, name)
        except Exception:
            continue
        if callable(value) and (here is None or getattr(value, "__module__", None) == here):
            names.append(name)
    if not names:
        return "it defines no public callable"
    import difflib   # only for this error message: not imported at every start

    close = difflib.get_close_matches(wanted, names, n=limit, cutoff=0.5)
    ordered = close + [n for n in sorted(names) if n not in close]
    more = len(ordered) - limit
    return "found: " + ", ".join(ordered[:limit]) + (f" and {more} more" if more > 0 else "")

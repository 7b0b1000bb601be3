"""Project directory -> image, in content-addressed layers (base, runtime, deps, code)."""
from .errors import BuildError
from .function import BuildResult, build_function
from .verify import HandlerCheckFailed

__all__ = ["BuildError", "BuildResult", "HandlerCheckFailed", "build_function"]

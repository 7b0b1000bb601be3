"""Project directory -> image, in content-addressed layers (base, runtime, deps, code)."""
from .errors import BuildError
from .function import BuildResult, build_function

__all__ = ["BuildError", "BuildResult", "build_function"]

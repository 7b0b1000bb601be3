"""Only the Cython extensions live here; everything else is in pyproject.toml.

Each ext/_NAME_c.pyx is built as gantry.hotpath._NAME_c, the compiled twin of
platform/gantry/hotpath/_NAME_py.py.  GANTRY_NO_EXTENSIONS=1 at build time skips them
(the pure-Python twins then serve, as they do wherever the import fails).
"""
import glob
import os

from setuptools import Extension, setup


def extensions():
    if os.environ.get("GANTRY_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            f"gantry.hotpath.{os.path.splitext(os.path.basename(path))[0]}",
            [path],
            extra_compile_args=["-O3"],
        )
        for path in sorted(glob.glob("ext/*.pyx"))
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )


setup(ext_modules=extensions())

"""The platform benchmark harness from benchmarks/: the same as `gantry bench`.

Run: .venv/bin/python benchmarks/bench.py [--quick] [--out FILE] [--no-render] [--render-only FILE]
What it measures and how: docs/benchmarks.md; code: platform/gantry/bench/.
"""
import sys

from gantry.bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

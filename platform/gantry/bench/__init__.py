"""`gantry bench`: the platform measured on this machine, against the floor (the same
container called directly) and against what users would pick instead (nginx in front of
that container; `limits`, `random.choices`, `uhashring` for the hot path).

It starts its own platform (own redis-server; scheduler, gateway and worker processes),
runs the measurements below, writes a JSON results file and renders the tables into
BENCHMARKS.md between ``<!-- bench:begin`` and ``<!-- bench:end -->``:

1. warm invocation at 1 and 64 clients: direct / nginx / gateway (``warm``)
2. cold start from zero, with a ready instance, breakdown (``cold``)
3. streaming, first and last chunk (``stream``)
4. builds and redeploy until traffic has moved (``deploy``)
5. scale from zero under a burst of 64 (``scale``)
6. the hot-path microbenchmarks (benchmarks/hotpath_report.py)
7. async invocations: submissions/s beside sync invokes/s, queue-to-start with a warm
   instance (``async``)

Every container it starts carries the run's node label and is removed at the end.
Run: ``gantry bench [--quick] [--only SECTIONS] [--out FILE] [--no-render]`` or ``python -m gantry.bench``.
"""
from .runner import run

__all__ = ["run"]

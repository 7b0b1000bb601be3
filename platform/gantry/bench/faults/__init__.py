"""`gantry bench --faults`: the faults of the issue "no request runs twice, no function reaches
another, no fault takes the node down", re-run under load and counted.

For each scenario a fresh platform (its own redis-server, with or without an append-only
file; the scheduler, a standby where the fault needs one, the gateway and one worker agent,
each its own process, every setting at its default) runs the function of
tests/gateway/functions/delivery, whose handler writes ``SIDE-EFFECT <tag>`` to stdout before
it answers.  An open-loop load of 20 requests/s, each with its own tag, runs for 30-65 s; the
fault is injected at a fixed time (``scenarios``); each request's status, error code and
latency is recorded (``load``); every container of the run is followed from its start, so the
side effects of dead containers are counted too (``effects``); then every request is
accounted for: answered 200, failed (planned: the documented answer to that fault, or not),
its side effect run 0, 1 or more times (``account``).  Last, the malformed-input run
(``hostile``).  The results go to a JSON file and a table in FAULTS.md (``render``).

Run: ``gantry bench --faults [--quick] [--out FILE] [--no-render]`` or
``python -m gantry.bench.faults``.  Every container carries the run's node label and is
removed at the end; the platform's processes get SIGTERM if the run dies.
"""
from .runner import run

__all__ = ["run"]

"""python -m gantry.bench.faults [--quick] [--out FILE] [--no-render] [--render-only FILE] [--only KEYS]
[--keep-logs DIR]"""
from __future__ import annotations

import argparse
import os
import sys


def default_out(quick: bool) -> str:
    from ..runner import repo_root

    root = repo_root()
    name = "faults-quick.json" if quick else "faults.json"
    return os.path.join(root, "benchmarks", "results", name) if root else os.path.abspath(f"gantry-{name}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="one scenario, shorter, and the malformed input (under 2 minutes)")
    p.add_argument("--out", metavar="FILE", help="results JSON (default: benchmarks/results/faults.json, "
                                                  "or faults-quick.json with --quick)")
    p.add_argument("--no-render", action="store_true", help="do not write the table into FAULTS.md")
    p.add_argument("--render-only", metavar="FILE", help="render an earlier results JSON; run nothing")
    p.add_argument("--markdown", metavar="FILE", help="the file to render into (default: the checkout's FAULTS.md)")
    p.add_argument("--only", metavar="KEYS", help="comma-separated scenario keys (and 'hostile') to run")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each platform's daemon and Redis logs to DIR/SCENARIO")


def problems(results: dict) -> list[str]:
    """What makes the run fail (exit 1): an error, a fault not injected as planned, incomplete
    accounting, a duplicate, a container left behind.  Unplanned failures are reported, not fatal: they are findings."""
    out = [f"{name}: {err.splitlines()[0]}" for name, err in results.get("errors", {}).items()]
    for key, sc in results.get("scenarios", {}).items():
        r = sc["requests"]
        if sc["facts"].get("inject_error"):
            out.append(f"{key}: the fault was not injected as planned: {sc['facts']['inject_error']}")
        if not r["accounted"]:
            out.append(f"{key}: {r['unanswered']} requests not accounted for")
        if r["duplicates"]:
            out.append(f"{key}: {r['duplicates']} requests ran more than once: {r['duplicate_tags']}")
        if sc["capture"]["unreadable"]:
            out.append(f"{key}: container logs not read: {sc['capture']['unreadable']}")
        if sc["containers_left"]:
            out.append(f"{key}: {sc['containers_left']} containers left behind")
    h = results.get("hostile")
    if h and h["containers_left"]:
        out.append(f"hostile: {h['containers_left']} containers left behind")
    return out


def main_args(args) -> int:
    from ..__main__ import results_of
    from . import render
    from .runner import run

    only = set(args.only.split(",")) if getattr(args, "only", None) else None
    results = results_of(args, lambda: run(quick=args.quick, only=only, keep_logs=getattr(args, "keep_logs", None)),
                         default_out, "FAULTS.md", render)
    for key, sc in results.get("scenarios", {}).items():
        r = sc["requests"]
        print(f"{key:>22}: {r['sent']} sent, {r['ok']} ok, {r['failed_planned']} planned + "
              f"{r['failed_unplanned']} unplanned failures {r['failures_by_answer']}, {r['duplicates']} duplicates, "
              f"{r['ok_without_side_effect']} 200 without side effect")
    if results.get("hostile"):
        h = results["hostile"]
        print(f"{'malformed input':>22}: {h['sent']} sent, {h['by_status']}, {h['count_5xx']} 5xx, "
              f"{len(h['unexpected'])} unexpected")
    bad = problems(results)
    for line in bad:
        print(f"gantry bench --faults: error: {line}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gantry bench --faults", description=__doc__)
    add_arguments(p)
    return main_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

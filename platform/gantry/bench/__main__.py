"""python -m gantry.bench [--faults] [--quick] [--only NAMES] [--out FILE] [--no-render] [--render-only FILE]"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def default_out(quick: bool, only: list[str] | None = None) -> str:
    from .runner import repo_root

    root = repo_root()
    name = "quick.json" if quick else "latest.json"
    if only:     # a partial run never replaces the full run's results
        name = "only-" + "+".join(sorted(only)) + ("-quick.json" if quick else ".json")
    if root:
        return os.path.join(root, "benchmarks", "results", name)
    return os.path.abspath(f"gantry-bench-{name}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer and shorter repeats (under 2 minutes)")
    p.add_argument("--out", metavar="FILE", help="results JSON (default: benchmarks/results/latest.json, "
                                                  "or quick.json with --quick)")
    p.add_argument("--only", metavar="NAMES", help="comma-separated sections to run (runner.CEILINGS: e.g. "
                                                   "warm,async); results go to benchmarks/results/only-NAMES.json and "
                                                   "are not rendered. With --faults: scenario keys")
    p.add_argument("--no-render", action="store_true", help="do not write the tables into BENCHMARKS.md")
    p.add_argument("--render-only", metavar="FILE", help="render an earlier results JSON; measure nothing")
    p.add_argument("--markdown", metavar="FILE", help="the file to render into (default: the checkout's BENCHMARKS.md)")
    p.add_argument("--faults", action="store_true", help="the fault re-run instead (gantry.bench.faults): "
                                                           "benchmarks/results/faults.json and FAULTS.md")


def _relative(path: str, root: str | None) -> str:
    if root and os.path.abspath(path).startswith(root + os.sep):
        return os.path.relpath(path, root)
    return path


def results_of(args, measure, out_for_mode, markdown_name: str, render, charts=None) -> dict:
    """The flow ``gantry bench`` and ``gantry bench --faults`` share: load the results
    (--render-only) or measure them (``measure()``) and write them to --out (default:
    ``out_for_mode(quick)``), then render them into the checkout's MARKDOWN_NAME (or
    --markdown) unless --no-render, with the images ``charts(results, markdown's folder)`` drew
    (paths relative to that folder) in ``results["charts"]``.  SIGTERM unwinds through the
    run's clean-up like Ctrl-C."""
    from .runner import repo_root

    root = repo_root()

    def _interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _interrupt)
    if args.render_only:
        with open(args.render_only) as f:
            results = json.load(f)
        out = args.render_only
    else:
        results = measure()
        out = args.out or out_for_mode(args.quick)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
        print(f"results: {out}", file=sys.stderr)
    markdown = args.markdown or (os.path.join(root, markdown_name) if root else None)
    if not args.no_render:
        if markdown and os.path.isfile(markdown):
            if charts is not None:
                results["charts"] = charts(results, os.path.dirname(os.path.abspath(markdown)))
            render.update_markdown(markdown, render.render(results, _relative(out, root)))
            print(f"rendered into {markdown}", file=sys.stderr)
        else:
            print(f"no {markdown_name} to render into (not a source checkout); use --markdown FILE", file=sys.stderr)
    return results


CHARTS_DIR = os.path.join("benchmarks", "charts")   # beside BENCHMARKS.md


def draw_charts(results: dict, root: str) -> list[str]:
    """The run's charts (gantry.bench.charts) in ROOT/benchmarks/charts, for a full run only
    (the committed pictures are of a whole run); without matplotlib, a note and none."""
    from .charts import ChartsUnavailable, draw

    if results.get("mode") != "full":
        return []
    try:
        return [os.path.relpath(p, root) for p in draw(results, os.path.join(root, CHARTS_DIR))]
    except ChartsUnavailable as exc:
        print(f"gantry bench: no charts: {exc}", file=sys.stderr)
        return []


def main_args(args) -> int:
    if getattr(args, "faults", False):
        from .faults.__main__ import main_args as faults_main

        return faults_main(args)
    from . import render
    from .runner import CEILINGS, run

    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    unknown = sorted(set(only or ()) - set(CEILINGS))
    if unknown:
        print(f"gantry bench: error: no section named {', '.join(unknown)} (sections: {', '.join(CEILINGS)})",
              file=sys.stderr)
        return 2
    if only and not args.no_render and not args.render_only:
        # the generated block holds one whole run: a partial one would blank the other sections
        print("gantry bench: a --only run is not rendered into BENCHMARKS.md (its results file has the figures)",
              file=sys.stderr)
        args.no_render = True
    results = results_of(args, lambda: run(quick=args.quick, only=set(only) if only else None),
                         lambda quick: default_out(quick, only), "BENCHMARKS.md", render, draw_charts)
    for goal in results.get("goals", []):
        if only and goal["status"] == "not measured":
            continue
        print(f"{goal['status']:>12}  {goal['goal']} ({goal['target']}): {goal['value']}  [{goal['why']}]")
    if results.get("errors"):
        for name, err in results["errors"].items():
            print(f"gantry bench: error: {name}: {err.splitlines()[0]}", file=sys.stderr)
        return 1
    left = (results.get("cleanup") or {}).get("containers_left")
    if left:
        print(f"gantry bench: error: {left} containers were left behind", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gantry bench", description=__doc__)
    add_arguments(p)
    return main_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

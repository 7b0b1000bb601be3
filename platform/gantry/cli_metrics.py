"""`gantry metrics` (registered by gantry.cli.parser): a function's (or a tenant's) per-minute
metrics over a range (the SDK's get_metrics), as a summary and a table of the points with
traffic (or the API's JSON with --json)."""
from __future__ import annotations

import json
import time
from typing import Any

from .cli_error import CLIError


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _errors(point: dict[str, Any]) -> str:
    if not point["errors"]:
        return "0"
    return f"{point['errors']} (" + ", ".join(f"{c} {n}" for c, n in point["errors_by_code"].items()) + ")"


def format_metrics(report: dict[str, Any]) -> str:
    """The metrics API's answer as the CLI prints it."""
    what = (f"function {report['name']} (tenant {report['tenant']})" if "name" in report
            else f"tenant {report['tenant']}")
    t, d = report["totals"], report["totals"]["duration"]
    lines = [f"{what}, last {_span(report['range'])}, per {_span(report['step'])} (UTC)"
             + ("" if report.get("recording", True) else "   (recording is off: GANTRY_METRICS=0)"),
             f"invocations {t['invocations']} (async attempts {t['async_attempts']})   errors {_errors(t)}   "
             f"throttles {t['throttles']}   cold starts {t['cold_starts']}"
             + (f" (average wait {_ms(t['cold_wait_avg'])})" if t["cold_starts"] else ""),
             f"duration avg {_ms(d['avg'])}   p50 {_ms(d['p50'])}   p95 {_ms(d['p95'])}   p99 {_ms(d['p99'])}",
             f"concurrency avg {t['concurrency_avg']:g}   in-flight peak {t['inflight_peak']}   "
             f"instances peak {t['instances_peak']}"]
    if t.get("tokens_in") or t.get("tokens_out"):     # vLLM functions (docs/openai.md)
        lines.append(f"tokens in {t['tokens_in']}   tokens out {t['tokens_out']}")
    busy = [p for p in report["series"] if p["invocations"] or p["throttles"] or p["cold_starts"]
            or p["instances_peak"] or p["inflight_peak"]]
    if not busy:
        return "\n".join(lines + ["", "no traffic in this range"])
    fmt = "%m-%d %H:%M" if report["range"] > 86400 else "%H:%M"
    rows = [["TIME", "INVOCATIONS", "ERRORS", "THROTTLES", "COLD", "P50", "P95", "P99", "IN-FLIGHT", "INSTANCES"]]
    for p in busy:
        rows.append([time.strftime(fmt, time.gmtime(p["start"])), p["invocations"], p["errors"], p["throttles"],
                     p["cold_starts"], _ms(p["duration"]["p50"]), _ms(p["duration"]["p95"]),
                     _ms(p["duration"]["p99"]), p["inflight_peak"], p["instances_peak"]])
    return "\n".join(lines + ["", _table(rows)])


def cmd_metrics(args) -> int:
    from .cli import _sdk

    if bool(args.name) == bool(args.tenant):
        raise CLIError("name a function, or a tenant with --tenant (not both)")
    report = _sdk(args).get_metrics(args.name or None, tenant=args.tenant or None, range=args.range or None,
                                    step=args.step or None)
    print(json.dumps(report, indent=2) if args.json else format_metrics(report))
    return 0


def add_commands(add) -> None:
    """Register the subcommand with gantry.cli.parser's ``add``."""
    sp = add("metrics", cmd_metrics, "a function's metrics per minute: invocations, errors, throttles, cold starts, "
                                     "duration percentiles, in-flight and instances")
    sp.add_argument("name", nargs="?", help="the function (or --tenant ID for a whole tenant)")
    sp.add_argument("--tenant", help="a tenant's metrics, its functions together (its own keys or the admin's)")
    sp.add_argument("--range", default="1h", help="how far back: 30m, 1h, 24h, 7d... (default 1h; at most "
                                                 "the retention, GANTRY_METRICS_RETENTION)")
    sp.add_argument("--step", help="minutes per point: 1m, 5m, 15m, 30m, 1h, 3h, 6h, 12h or 1d "
                                   "(default: at most 360 points)")
    sp.add_argument("--json", action="store_true", help="print the API's JSON")

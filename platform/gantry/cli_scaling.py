"""`gantry warm` and `gantry describe` (registered by gantry.cli.parser): hold instances
ready for a while, and show a function's spec summary, instances and the scheduler's last
scaling decisions (docs/control-plane.md "Scaling"), through the SDK (gantry.Client)."""
from __future__ import annotations

import json
import time
from typing import Any


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _secs(value: float) -> str:
    return f"{value:g}s"


def format_describe(fn: dict[str, Any], decisions: list[dict[str, Any]], now: float) -> str:
    """GET /v1/functions/NAME and its decisions as `gantry describe` prints them."""
    from .cli import _table

    lines = [f"{fn['name']} (tenant {fn.get('tenant', 'default')})",
             f"  version {fn['latest']} (active {fn['active']}), image {fn.get('image') or '-'}"]
    if fn.get("error"):
        lines.append(f"  unreadable: {fn['error']}")
    spec = fn.get("spec") or {}
    sc, res = spec.get("scaling"), spec.get("resources")
    if sc:
        floor = f"{sc['min_instances']}" + (f" (scaled to {fn['min_override']})" if fn.get("min_override") is not None else "")
        lines.append(f"  scaling: min {floor}, max {sc['max_instances']}, concurrency {sc['concurrency']}, "
                     f"target_utilization {sc.get('target_utilization', 1.0):g}")
        lines.append(f"           scale_up_cooldown {_secs(sc.get('scale_up_cooldown', 0))}, scale_down_cooldown "
                     f"{_secs(sc.get('scale_down_cooldown', 0))}, idle_timeout {_secs(sc['idle_timeout'])}, "
                     f"keep_paused {_secs(sc['keep_paused'])}")
    if res:
        lines.append(f"  resources: cpu {res['cpu']:g}, memory {res['memory'] >> 20}Mi, gpu {res['gpu']}")
    target = fn.get("scale_target")
    lines.append(f"  target: {target if target is not None else '-'} instance(s), {fn['ready']} ready of {fn['total']}")
    warm = fn.get("warm")
    if warm:
        lines.append(f"  warm: {warm['instances']} until {_clock(warm['until'])} "
                     f"({max(0, int(warm['until'] - now))}s left)")
    if fn.get("pending_reason"):
        lines.append(f"  waiting: {fn['pending_reason']}")
    if fn.get("start_failed"):
        lines.append(f"  version {fn['start_failed']['version']} failed to start: {fn['start_failed']['cause']}")
    lines.append("")
    instances = fn.get("instances") or []
    if instances:
        lines.append(_table([["INSTANCE", "VERSION", "NODE", "STATE", "ADDRESS", "REASON"]] + [
            [i["id"], i["version"], i["node"], i["state"], i.get("address") or "-", i.get("reason") or ""]
            for i in instances]))
    else:
        lines.append("no instances")
    lines.append("")
    if decisions:
        lines.append(_table([["DECIDED", "FROM", "TO", "REASON"]] + [
            [_clock(d["time"]), d["from"], d["to"], d["reason"]] for d in decisions]))
    else:
        lines.append("no scaling decisions yet")
    return "\n".join(lines)


def cmd_describe(args) -> int:
    from .cli import _sdk

    client = _sdk(args)
    fn = client.get_function(args.name)
    decisions = client.decisions(args.name, args.decisions)
    if args.json:
        print(json.dumps({**fn, "decisions": decisions}, indent=2))
    else:
        print(format_describe(fn, decisions, time.time()))
    return 0


def cmd_warm(args) -> int:
    from .cli import _progress, _sdk

    answer = _sdk(args).warm(args.name, args.instances, for_=args.duration)
    if answer.get("until"):
        _progress(f"{args.name}: at least {answer['instances']} instance(s) held until {_clock(answer['until'])}")
    else:
        _progress(f"{args.name}: no warm hold")
    return 0


def add_commands(add) -> None:
    """Register `gantry warm` and `gantry describe` with gantry.cli.parser's ``add``."""
    sp = add("warm", cmd_warm, "hold at least N instances of a function ready for a while (0: end the hold)")
    sp.add_argument("name")
    sp.add_argument("instances", type=int, metavar="N")
    sp.add_argument("--for", dest="duration", default="10m", metavar="DURATION",
                    help="how long, such as 30s, 10m or 2h (default 10m)")
    sp = add("describe", cmd_describe, "show a function: spec summary, instances and the last scaling decisions")
    sp.add_argument("name")
    sp.add_argument("--decisions", type=int, default=10, metavar="N", help="how many decisions (default 10, at most 50)")
    sp.add_argument("--json", action="store_true", help="print the API's JSON (the function and its decisions)")

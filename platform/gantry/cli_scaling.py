"""`gantry warm`, `gantry describe` and `gantry scaling` (registered by gantry.cli.parser):
hold instances ready for a while, show a function's spec summary, instances and the
scheduler's last scaling decisions, and change its scaling policy without a build
(docs/control-plane.md "Scaling"), through the SDK (gantry.Client)."""
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


# `gantry scaling` options -> the [scaling] field each sets (PATCH /v1/functions/NAME/scaling)
SCALING_OPTIONS = (("--min", "min_instances", int, "N"), ("--max", "max_instances", int, "N"),
                   ("--concurrency", "concurrency", int, "N"), ("--target", "target_utilization", float, "SHARE"),
                   ("--scale-up-cooldown", "scale_up_cooldown", str, "DURATION"),
                   ("--scale-down-cooldown", "scale_down_cooldown", str, "DURATION"),
                   ("--idle-timeout", "idle_timeout", str, "DURATION"),
                   ("--keep-paused", "keep_paused", str, "DURATION"))


def format_scaling(answer: dict[str, Any]) -> str:
    """The PATCH answer as `gantry scaling` prints it: what happened, then the whole policy."""
    sc = answer["scaling"]
    head = (f"{answer['name']}: version {answer['version']} registered (active {answer['active']}; "
            f"new instances replace the old once ready)" if answer["changed"] else
            f"{answer['name']}: unchanged (version {answer['version']})")
    return "\n".join([head, f"  min {sc['min_instances']}, max {sc['max_instances']}, concurrency "
                            f"{sc['concurrency']}, target_utilization {sc['target_utilization']:g}",
                      f"  scale_up_cooldown {_secs(sc['scale_up_cooldown'])}, scale_down_cooldown "
                      f"{_secs(sc['scale_down_cooldown'])}, idle_timeout {_secs(sc['idle_timeout'])}, "
                      f"keep_paused {_secs(sc['keep_paused'])}"])


def cmd_scaling(args) -> int:
    from .cli import _sdk
    from .cli_error import CLIError

    fields = {dest: getattr(args, dest) for _, dest, _, _ in SCALING_OPTIONS if getattr(args, dest) is not None}
    if not fields:
        raise CLIError("scaling: give at least one of " + ", ".join(o for o, *_ in SCALING_OPTIONS))
    answer = _sdk(args).configure_scaling(args.name, **fields)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(format_scaling(answer))
    return 0


def add_commands(add) -> None:
    """Register `gantry warm`, `gantry describe` and `gantry scaling` with gantry.cli.parser's ``add``."""
    sp = add("warm", cmd_warm, "hold at least N instances of a function ready for a while (0: end the hold)")
    sp.add_argument("name")
    sp.add_argument("instances", type=int, metavar="N")
    sp.add_argument("--for", dest="duration", default="10m", metavar="DURATION",
                    help="how long, such as 30s, 10m or 2h (default 10m)")
    sp = add("describe", cmd_describe, "show a function: spec summary, instances and the last scaling decisions")
    sp.add_argument("name")
    sp.add_argument("--decisions", type=int, default=10, metavar="N", help="how many decisions (default 10, at most 50)")
    sp.add_argument("--json", action="store_true", help="print the API's JSON (the function and its decisions)")
    sp = add("scaling", cmd_scaling, "change a function's scaling policy without a build (a new version, same image)")
    sp.add_argument("name")
    for option, dest, kind, metavar in SCALING_OPTIONS:
        sp.add_argument(option, dest=dest, type=kind, metavar=metavar, help=f"scaling.{dest}")
    sp.add_argument("--json", action="store_true", help="print the API's JSON answer")

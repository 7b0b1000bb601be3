"""`gantry schedules ls` (registered by gantry.cli.parser): the [[schedules]] of the caller's
functions as a table, from GET /v1/schedules through the SDK (or its JSON with --json)."""
from __future__ import annotations

import json
from typing import Any


def format_schedules(schedules: list[dict[str, Any]]) -> str:
    from .cli import _table

    if not schedules:
        return "no schedules"
    rows = [["FUNCTION", "SCHEDULE", "CRON", "TIME ZONE", "PRIORITY", "NEXT", "LAST FIRED", "LAST INVOCATION",
             "MISSED"]]
    for s in schedules:
        rows.append([s["function"], s["name"], s["cron"], s["timezone"], s["priority"], s["next"] or "-",
                     s["last_fired"] or "-", s["last_invocation"] or "-", str(s["missed"])])
    return _table(rows)


def cmd_schedules(args) -> int:
    """`gantry schedules ACTION` (ls is the only one)."""
    from .cli import _sdk

    schedules = _sdk(args).schedules(tenant=args.tenant or None, function=args.function or None)
    # --json: the API's answer, {"schedules": [...]}, which is all it holds
    print(json.dumps({"schedules": schedules}, indent=2) if args.json else format_schedules(schedules))
    return 0


def add_commands(add, common) -> None:
    """Register `gantry schedules ls` with gantry.cli.parser's ``add`` (COMMON: its --url and
    --api-key options, which the subcommand takes too)."""
    sp = add("schedules", cmd_schedules, "cron schedules that fire async invocations ([[schedules]] in gantry.toml)")
    sub = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("ls", parents=[common], help="list schedules: next tick, last fired, missed ticks")
    ls.add_argument("--function", metavar="NAME", help="only this function's")
    ls.add_argument("--tenant", help="only this tenant's (the platform admin; default: every tenant's)")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")

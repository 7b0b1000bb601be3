"""`gantry usage` and `gantry audit` (registered by gantry.cli.parser): read the usage and audit
APIs through the SDK (gantry.Client) and print them as tables (or the API's JSON with --json)."""
from __future__ import annotations

import json
import time
from typing import Any

from .usage.model import COUNTERS, CPU, DURATION, GPU, MEMORY

_HEADS = {"invocations": "INVOCATIONS", "errors": "ERRORS", "throttles": "THROTTLES",
          DURATION: "DURATION s", CPU: "CPU s", MEMORY: "MEMORY GiB·s", GPU: "GPU s"}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _num(counter: str, value: float) -> str:
    return f"{int(value)}" if counter in ("invocations", "errors", "throttles") else f"{value:.2f}"


def _money(value: float, currency: str) -> str:
    return f"{value:.4f}" + (f" {currency}" if currency else "")


def format_usage(report: dict[str, Any]) -> str:
    """The usage API's answer as the CLI prints it: one row per function, a total row, then
    the cost lines."""
    rows = [["FUNCTION", *(_HEADS[c] for c in COUNTERS)]]
    for name, row in report["functions"].items():
        rows.append([name, *(_num(c, row[c]) for c in COUNTERS)])
    rows.append(["TOTAL", *(_num(c, report["totals"][c]) for c in COUNTERS)])
    cost, cur = report["cost"], report["cost"].get("currency", "")
    return "\n".join([
        f"tenant {report['tenant']}, {report['since']} to {report['until']} (UTC days)",
        _table(rows), "",
        f"cost of this period:   {_money(cost['period'], cur)}",
        f"month to date:         {_money(cost['month_to_date'], cur)}",
        f"this month, estimated: {_money(cost['monthly_estimate'], cur)}"
        + ("" if any(v for k, v in cost["prices"].items() if k != "currency")
           else "   (no prices set: GANTRY_PRICES)")])


def format_audit(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no audit entries"
    rows = [["TIME (UTC)", "ACTOR", "TENANT", "ACTION", "TARGET", "DETAIL"]]
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["time"]))
        detail = json.dumps(e["detail"], separators=(",", ":")) if e["detail"] else ""
        rows.append([when, e["actor"], e["tenant"], e["action"], e["target"], detail])
    return _table(rows)


def cmd_usage(args) -> int:
    from .cli import _sdk

    # an empty option is left out, as if not given
    report = _sdk(args).usage(tenant=args.tenant or None, since=args.since or None, until=args.until or None)
    print(json.dumps(report, indent=2) if args.json else format_usage(report))
    return 0


def cmd_audit(args) -> int:
    from .cli import _sdk

    page = _sdk(args).audit(tenant=args.tenant or None, after=args.after or None, limit=args.limit)
    print(json.dumps(page, indent=2) if args.json else format_audit(page["entries"]))
    return 0


def add_commands(add) -> None:
    """Register the subcommands with gantry.cli.parser's ``add``."""
    sp = add("usage", cmd_usage, "a tenant's usage per function and its cost (month to date, monthly estimate)")
    sp.add_argument("--tenant", help="the tenant (the platform admin key only; default: the key's own)")
    sp.add_argument("--since", help="first day, YYYY-MM-DD or a number of days such as 7d (default: the 1st "
                                    "of this month, UTC)")
    sp.add_argument("--until", help="last day, YYYY-MM-DD (default: today, UTC)")
    sp.add_argument("--json", action="store_true", help="print the API's JSON")
    sp = add("audit", cmd_audit, "the audit trail of admin actions (deploys, deletes, scaling, keys, tenants)")
    sp.add_argument("--tenant", help="only this tenant's entries (a tenant key sees only its own)")
    sp.add_argument("--limit", type=int, default=50, help="how many entries (default 50: the latest)")
    sp.add_argument("--after", help="entries after this cursor (an entry's id), oldest first")
    sp.add_argument("--json", action="store_true", help="print the API's JSON")

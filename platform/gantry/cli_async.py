"""Async invocations on the command line (registered by gantry.cli.parser): `gantry invoke
--async` and the options `gantry invoke` sends as headers, `gantry invocations get|cancel|result`
and `gantry dlq ls|show|replay|purge`.  Everything goes through the SDK (gantry.Client) to the
HTTP API of gantry.gateway.async_api; docs/async.md describes it."""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from .cli import _progress, _sdk, _table
from .cli_error import CLIError
from .invocations.model import PRIORITIES, SETTLED
from .sdk.calls import IDEMPOTENCY_KEY, MAX_WAIT

DEFAULT_WAIT = 300.0
_SETTLED = frozenset(str(s) for s in SETTLED)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC" if ts else "-"


# --- gantry invoke ------------------------------------------------------------------------

def add_invoke_arguments(sp) -> None:
    sp.add_argument("--async", dest="async_", action="store_true",
                    help="queue the invocation and print its id (see `gantry invocations get ID`)")
    sp.add_argument("--priority", help="with --async: high, normal (default) or low")
    sp.add_argument("--callback-url", metavar="URL", help="with --async: POST the settled invocation's JSON here")
    sp.add_argument("--idempotency-key", metavar="KEY",
                    help="run once per KEY: a repeat gets the first run's invocation and result")


def invoke_options(args) -> dict[str, str]:
    """The SDK invoke() arguments `gantry invoke`'s options ask for; options that only mean
    something with --async are refused without it (here, as one CLI line, before any request)."""
    options = {"idempotency_key": args.idempotency_key} if args.idempotency_key else {}
    if not args.async_:
        for flag, value in (("--priority", args.priority), ("--callback-url", args.callback_url)):
            if value:
                raise CLIError(f"{flag} needs --async (a sync invoke runs at once and answers here)")
        return options
    if args.stream:
        raise CLIError("--stream does not go with --async (the result is kept: `gantry invocations get ID`)")
    if args.priority:
        if args.priority.lower() not in PRIORITIES:
            raise CLIError(f"--priority: expected one of {', '.join(PRIORITIES)}, got {args.priority!r}")
        options["priority"] = args.priority.lower()
    if args.callback_url:
        options["callback_url"] = args.callback_url
    return options


def invoke_async(client, name: str, body: bytes, content_type: str, options: dict[str, str]) -> int:
    """Queue the invocation; only its id goes to stdout (`ID=$(gantry invoke f --async)`)."""
    sub = client.invoke(name, body, mode="async", content_type=content_type, **options)
    if sub.get("idempotent_replay"):
        _progress(f"{IDEMPOTENCY_KEY} {options['idempotency_key']!r} was used before: invocation {sub['id']} "
                  f"is {sub['state']}")
    print(sub["id"])
    return 0


# --- gantry invocations ----------------------------------------------------------------------

def format_result(inv: dict[str, Any]) -> str | None:
    """The result as the CLI shows it: pretty JSON, text as it is, binary as its size."""
    if "result" not in inv:
        return None
    result, rtype = inv["result"], inv.get("result_type") or "no content type"
    if inv.get("result_encoding") == "base64":
        size = len(base64.b64decode(result))
        return f"{size} bytes, not text (`gantry invocations result {inv['id']}` writes them)"
    if isinstance(result, str) and not rtype.split(";")[0].strip().endswith("json"):
        return result
    return json.dumps(result, indent=2, ensure_ascii=False)


def format_invocation(inv: dict[str, Any]) -> str:
    """An invocation (the API's JSON) as aligned lines, then its result."""
    rows = [["id", inv["id"]], ["function", inv["function"]], ["state", inv["state"]],
            ["attempts", f"{inv['attempts']} of {inv['max_attempts']}"], ["priority", inv["priority"]],
            ["source", inv["source"] + (f" (schedule {inv['schedule']})" if inv.get("schedule") else "")],
            ["created", _when(inv["created"])], ["started", _when(inv.get("started"))],
            ["finished", _when(inv.get("finished"))]]
    if "next_attempt_at" in inv:
        rows.append(["next attempt", _when(inv["next_attempt_at"])])
    if "dead_at" in inv:
        rows.append(["dead at", _when(inv["dead_at"])])
    if "status" in inv:
        rows.append(["status", inv["status"]])
    if inv.get("error"):
        rows.append(["error", f"{inv['error']['code']}: {inv['error']['message']}"])
    for field, label in (("idempotency_key", "idempotency key"), ("replays", "replays")):
        if inv.get(field):
            rows.append([label, inv[field]])
    if "payload_size" in inv:
        rows.append(["payload", f"{inv['payload_size']} bytes of {inv.get('content_type') or 'no content type'}"])
    cb = inv.get("callback")
    if cb:
        rows.append(["callback", f"{cb['url']} ({cb['state']}, {cb['attempts']} attempts"
                                 + (f", status {cb['status']}" if cb.get("status") else "")
                                 + (f": {cb['error']}" if cb.get("error") else "") + ")"])
    text = _table([[k + ":", v] for k, v in rows])
    result = format_result(inv)
    if result is not None:
        text += f"\nresult ({inv.get('result_type') or 'no content type'}):\n{result}"
    return text


def wait_settled(client, inv_id: str, budget: float) -> dict[str, Any]:
    """The invocation once it settles, or as it is when BUDGET seconds have passed: long polls
    of at most MAX_WAIT seconds each, so no one request outlives a proxy's idle timeout.  (Not
    the SDK's wait(): that raises when time is up, and the CLI shows the record as it is.)"""
    deadline = time.monotonic() + budget
    while True:
        left = deadline - time.monotonic()
        asked = min(MAX_WAIT, max(0.0, left))
        began = time.monotonic()
        inv = client.get_invocation(inv_id, wait=asked)
        if inv["state"] in _SETTLED or left <= 0:
            return inv
        if time.monotonic() - began < min(asked, 0.2):     # answered early unsettled: don't spin
            time.sleep(0.2)


def cmd_invocations(args) -> int:
    client = _sdk(args)
    if args.action == "get":
        if args.wait is None:
            inv = client.get_invocation(args.id)
        else:
            inv = wait_settled(client, args.id, args.wait)
        print(json.dumps(inv, indent=2) if args.json else format_invocation(inv))
        if args.wait is None:
            return 0
        if inv["state"] not in _SETTLED:
            raise CLIError(f"invocation {inv['id']} is still {inv['state']} after {args.wait:g}s")
        return 0 if inv["state"] == "succeeded" else 1
    if args.action == "cancel":
        done = client.cancel(args.id)
        _progress(f"cancelled {done['id']} (it was {done['was']})")
        return 0
    result = client.invocation_result(args.id)      # "result"
    out = sys.stdout.buffer
    out.write(result.body)
    out.flush()
    if result.status >= 400:
        raise CLIError(f"invocation {args.id} failed: its result (above) has status {result.status}")
    return 0


# --- gantry dlq ------------------------------------------------------------------------------

def format_dead(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no dead letters"
    rows = [["ID", "FUNCTION", "STATE", "ATTEMPTS", "ERROR", "DEAD AT (UTC)"]]
    for inv in items:
        rows.append([inv["id"], inv["function"], inv["state"], f"{inv['attempts']}/{inv['max_attempts']}",
                     (inv.get("error") or {}).get("code", "-"),
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(inv["dead_at"]))])
    return _table(rows)


def cmd_dlq(args) -> int:
    client = _sdk(args)
    if args.action == "ls":
        if args.limit < 1:
            raise CLIError(f"--limit: expected at least 1, got {args.limit}")
        items = list(client.dead_letters(function=args.function, tenant=args.tenant, limit=args.limit))
        print(json.dumps({"invocations": items}, indent=2) if args.json else format_dead(items))
    elif args.action == "show":
        inv = client.get_dead_letter(args.id)
        print(json.dumps(inv, indent=2) if args.json else format_invocation(inv))
    elif args.action == "replay":
        done = client.replay(args.id)
        _progress(f"replayed {done['id']}: {done['state']} again (`gantry invocations get {done['id']} --wait`)")
    else:
        return _purge(client, args)
    return 0


def _purge(client, args) -> int:
    from .sdk import GantryError

    if args.all == bool(args.ids):
        raise CLIError("gantry dlq purge: give the ids to purge, or --all")
    if (args.function or args.tenant) and not args.all:
        raise CLIError("--function and --tenant choose what --all purges; they do not go with ids")
    ids = args.ids or [inv["id"] for inv in client.dead_letters(function=args.function, tenant=args.tenant)]
    purged, failed = 0, 0
    for inv_id in ids:
        try:
            client.purge(inv_id)
            purged += 1
        except GantryError as exc:
            if args.all and exc.status == 404:     # replayed or purged since it was listed
                continue
            failed += 1
            print(f"gantry: error: {inv_id}: {exc}", file=sys.stderr)
    print(f"purged {purged} dead letter{'' if purged == 1 else 's'}")
    return 1 if failed else 0


def add_commands(add, common) -> None:
    """Register the subcommands with gantry.cli.parser's ``add``; COMMON holds --url and
    --api-key, given to each action's parser (argparse lets a subparser's default override
    the same option given before it, so the group's own parser has none)."""
    sp = add("invocations", cmd_invocations, "an async invocation: its state and result, or cancel it", ())
    actions = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    ap = actions.add_parser("get", parents=[common], help="state, attempts, times, error and result")
    ap.add_argument("id")
    ap.add_argument("--wait", nargs="?", type=float, const=DEFAULT_WAIT, metavar="SECONDS",
                    help=f"wait until it settles (at most SECONDS, default {DEFAULT_WAIT:g}); exit 0 only "
                         "if it succeeded")
    ap.add_argument("--json", action="store_true", help="print the API's JSON")
    ap = actions.add_parser("cancel", parents=[common], help="cancel a queued or retrying invocation")
    ap.add_argument("id")
    ap = actions.add_parser("result", parents=[common], help="write the result's bytes, as returned, to stdout")
    ap.add_argument("id")

    sp = add("dlq", cmd_dlq, "dead letters: async invocations that ran out of attempts or time", ())
    actions = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    scope = _scope_parent()
    ap = actions.add_parser("ls", parents=[common, scope], help="list dead letters, oldest first")
    ap.add_argument("--limit", type=int, default=100, help="how many (default 100)")
    ap.add_argument("--json", action="store_true", help="print the API's JSON")
    ap = actions.add_parser("show", parents=[common], help="one dead letter in full")
    ap.add_argument("id")
    ap.add_argument("--json", action="store_true", help="print the API's JSON")
    ap = actions.add_parser("replay", parents=[common], help="queue a dead letter again, same id, fresh attempts")
    ap.add_argument("id")
    ap = actions.add_parser("purge", parents=[common, scope], help="delete dead letters: the ids given, or --all")
    ap.add_argument("ids", nargs="*", metavar="ID")
    ap.add_argument("--all", action="store_true", help="every dead letter (of --function, --tenant)")


def _scope_parent() -> argparse.ArgumentParser:
    """--function and --tenant: which dead letters `dlq ls` and `dlq purge --all` take."""
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("--function", metavar="NAME", help="only this function's")
    scope.add_argument("--tenant", help="only this tenant's (platform admin; a tenant's key sees its own)")
    return scope

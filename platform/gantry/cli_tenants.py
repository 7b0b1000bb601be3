"""`gantry tenants`, `gantry keys` and `gantry whoami` (docs/tenants.md), through the SDK's
client (gantry.Client) that gantry.cli passes each command."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .tenants.model import QUOTA_FIELDS, Isolation, Scope


class _Error(Exception):
    pass


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _quota_text(quotas: dict) -> str:
    def one(k, v):
        return f"{k}={v / 2**30:g}Gi" if k == "memory" else f"{k}={v:g}"
    return ", ".join(one(k, v) for k, v in sorted(quotas.items())) or "none"


def _quotas(items: list[str] | None) -> dict | None:
    """--quota instances=4 --quota memory=8Gi --quota rpm=none -> the API's quotas object."""
    if not items:
        return None
    out: dict = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or name not in QUOTA_FIELDS:
            raise _Error(f"--quota {item!r}: expected RESOURCE=LIMIT, RESOURCE one of {', '.join(QUOTA_FIELDS)}")
        if value in ("none", "null", ""):
            out[name] = None
        elif name == "memory":
            out[name] = value
        else:
            try:
                out[name] = float(value) if name == "cpu" else int(value)
            except ValueError:
                raise _Error(f"--quota {item!r}: expected a number") from None
    return out


def _tenant_fields(args) -> dict:
    """The tenant fields the options give (only those given: an update changes no other)."""
    body: dict = {}
    if args.name:
        body["name"] = args.name
    if args.isolation:
        body["isolation"] = args.isolation
    quotas = _quotas(args.quota)
    if quotas is not None:
        body["quotas"] = quotas
    if args.feature is not None:
        body["features"] = args.feature
    return body


def _use_text(t: dict) -> str:
    """instances 3/8, cpu 1.5/4, ...: the use of every resource that has a quota or is in use."""
    used, quotas = t.get("usage") or {}, t["quotas"]
    out = []
    for name in QUOTA_FIELDS:
        if name == "rpm" or (name not in quotas and not used.get(name)):
            continue
        value, limit = used.get(name, 0), quotas.get(name)
        if name == "memory":
            value, limit = f"{value / 2**30:.2f}Gi", (f"{limit / 2**30:g}Gi" if limit is not None else None)
        else:
            value = f"{value:g}"
        out.append(f"{name} {value}/{limit if limit is not None else 'unlimited'}")
    return ", ".join(out) or "nothing"


def _show_tenant(t: dict) -> None:
    print(f"{t['id']}  ({t['name']})\n  isolation: {t['isolation']}\n  quotas:    {_quota_text(t['quotas'])}\n"
          f"  in use:    {_use_text(t)}\n"
          f"  features:  {', '.join(t['features']) or 'none'}\n  functions: {t['functions']}\n"
          f"  created:   {_fmt_time(t['created'])}")


def cmd_tenants(args, client, table) -> int:
    if args.action == "create":
        _show_tenant(client.create_tenant(args.id, **_tenant_fields(args)))
    elif args.action == "update":
        _show_tenant(client.update_tenant(args.id, **_tenant_fields(args)))
    elif args.action == "show":
        _show_tenant(client.get_tenant(args.id))
    elif args.action == "rm":
        out = client.delete_tenant(args.id)
        print(f"removed tenant {args.id} and {out['keys_removed']} key(s)", file=sys.stderr)
    else:
        rows = [["TENANT", "NAME", "ISOLATION", "FUNCTIONS", "QUOTAS"]]
        for t in client.list_tenants():
            rows.append([t["id"], t["name"], t["isolation"], t["functions"], _quota_text(t["quotas"])])
        print(table(rows))
    return 0


def cmd_keys(args, client, table) -> int:
    tenant = getattr(args, "tenant", None) or None
    if args.action == "create":     # options not given are left out of the request (the SDK drops None)
        made = client.create_key(tenant=tenant, scope=args.scope, functions=args.function or None,
                                 ttl=args.ttl or None, note=args.note or None)
        print(f"key {made['id']} for tenant {made['tenant']}, scope {made['scope']}"
              + (f", expires {_fmt_time(made['expires'])}" if made.get("expires") else "")
              + ": shown once, keep it now", file=sys.stderr)
        print(made["key"])
    elif args.action == "revoke":
        out = client.revoke_key(args.id)
        print(f"key {args.id} " + ("was already revoked" if out["already"] else "revoked"), file=sys.stderr)
    else:
        found = client.list_keys(tenant=tenant)
        if args.json:
            print(json.dumps(found, indent=2))
            return 0
        rows = [["ID", "TENANT", "SCOPE", "FUNCTIONS", "CREATED", "EXPIRES", "STATE", "NOTE"]]
        for k in found:
            st = "revoked" if k.get("revoked") else "live" if k.get("live") else "expired"
            rows.append([k["id"], k["tenant"], k["scope"], ",".join(k.get("functions") or []) or "all",
                         _fmt_time(k["created"]), _fmt_time(k.get("expires")), st, k.get("note") or ""])
        print(table(rows))
    return 0


def cmd_whoami(args, client, table) -> int:
    who = client.whoami()
    limited = f", limited to {', '.join(who['functions'])}" if who.get("functions") else ""
    print(f"key {who['key_id']}: tenant {who['tenant']}, scope {who['scope']}{limited}")
    return 0


def add_commands(add) -> None:
    """Register the subcommands with cli.parser's ``add(name, func, help)``."""
    sp = add("tenants", cmd_tenants, "create, list, show, update and remove tenants (platform admin)")
    sp.add_argument("action", choices=("create", "ls", "show", "update", "rm"), nargs="?", default="ls")
    sp.add_argument("id", nargs="?", help="tenant id ([a-z][a-z0-9-]*)")
    sp.add_argument("--name", help="display name")
    sp.add_argument("--isolation", choices=[i.value for i in Isolation],
                    help="shared, container (default for a new tenant) or node")
    sp.add_argument("--quota", action="append", metavar="RESOURCE=LIMIT",
                    help=f"repeatable; RESOURCE one of {', '.join(QUOTA_FIELDS)}; LIMIT 'none' removes it")
    sp.add_argument("--feature", action="append", help="repeatable: the tenant's feature flags (replaces them)")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp = add("keys", cmd_keys, "make, list and revoke API keys")
    sp.add_argument("action", choices=("create", "ls", "revoke"), nargs="?", default="ls")
    sp.add_argument("id", nargs="?", help="the key id (revoke)")
    sp.add_argument("--tenant", help="the tenant (platform admin; a tenant's key acts in its own)")
    sp.add_argument("--scope", choices=[s.value for s in Scope], default="invoke", help="default invoke")
    sp.add_argument("--function", action="append", help="repeatable: limit the key to these functions")
    sp.add_argument("--ttl", help="lifetime, such as 30d or 12h (default: no expiry)")
    sp.add_argument("--note", help="what the key is for")
    sp.add_argument("--json", action="store_true", help="ls: the raw records")
    add("whoami", cmd_whoami, "the tenant and scope of the API key in use")


def check(args) -> None:
    """Arguments argparse cannot check alone."""
    needs_id = {("tenants", "create"), ("tenants", "show"), ("tenants", "update"), ("tenants", "rm"),
                ("keys", "revoke")}
    if (args.command, getattr(args, "action", None)) in needs_id and not args.id:
        raise _Error(f"gantry {args.command} {args.action}: which one? (an id is needed)")

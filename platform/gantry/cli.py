"""`gantry`: the user's whole interface.  Commands that act on a running platform go through
its HTTP API; `build` and `images` work on the local Docker engine."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import __version__


class CLIError(Exception):
    """Printed as one line `gantry: error: ...`, exit status 1."""


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _docker():
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except Exception as exc:
        raise CLIError(f"cannot reach the Docker engine ({exc}); is dockerd running? (scripts/setup.sh starts it)")


def cmd_images(args) -> int:
    from .build.images import ensure_runtime_image

    print(ensure_runtime_image(_docker(), _progress))
    return 0


def cmd_build(args) -> int:
    from .build import build_function

    result = build_function(_docker(), args.directory, _progress)
    print(result.image)
    return 0


COMMANDS: dict[str, tuple[Callable, str]] = {
    "images": (cmd_images, "build the base and runtime images if missing; print the runtime tag"),
    "build": (cmd_build, "build a function directory into an image; print its tag"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gantry", description="Self-hosted serverless functions.")
    p.add_argument("--version", action="version", version=f"gantry {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == "build":
            sp.add_argument("directory", help="function directory holding gantry.toml")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .build import BuildError
    from .manifest import ManifestError

    try:
        return COMMANDS[args.command][0](args)
    except (CLIError, BuildError, ManifestError) as exc:
        print(f"gantry: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

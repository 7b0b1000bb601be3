"""Write docs/api.md from the OpenAPI document (platform/gantry/gateway/openapi.py).

    .venv/bin/python scripts/render_api.py           # rewrite docs/api.md
    .venv/bin/python scripts/render_api.py --check   # exit 1 if docs/api.md is out of date

tests/gateway/test_openapi.py runs the check, so a change to the API that is not rendered fails.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "platform"), os.path.join(ROOT, "runtime")]

from gantry.gateway.openapi import render_markdown  # noqa: E402

TARGET = os.path.join(ROOT, "docs", "api.md")


def main(argv: list[str]) -> int:
    text = render_markdown()
    if "--check" in argv:
        with open(TARGET, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{TARGET} is out of date: run scripts/render_api.py", file=sys.stderr)
                return 1
        return 0
    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

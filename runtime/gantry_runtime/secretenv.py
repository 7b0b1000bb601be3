"""The function's secrets into its environment, before the handler is imported.

The worker writes each secret the manifest's ``[secrets]`` names as a file named after its
variable in /run/secrets (a read-only mount of a tmpfs directory of the instance's own) and
lists the variables, names only, in GANTRY_SECRET_VARS.  Setting ``os.environ`` here makes
them ordinary environment variables for the handler, the libraries it uses (OPENAI_API_KEY
just works) and the subprocesses it starts; /proc/PID/environ of this process still shows
only the environment it was started with, which holds no value (docs/tenants.md, "Secrets").
"""
from __future__ import annotations

import os
import re

SECRETS_DIR = "/run/secrets"
SECRET_VARS_ENV = "GANTRY_SECRET_VARS"
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretsUnreadable(Exception):
    """A listed secret's file is missing or unreadable; str() names the variable, never a value."""


def load(environ=None, directory: str = SECRETS_DIR) -> list[str]:
    """Set each variable GANTRY_SECRET_VARS lists from its file; the variables set."""
    environ = os.environ if environ is None else environ
    names = [n.strip() for n in environ.get(SECRET_VARS_ENV, "").split(",") if n.strip()]
    values = {}
    for name in names:
        if not _VAR.match(name):
            raise SecretsUnreadable(f"{SECRET_VARS_ENV}: {name[:60]!r} is not a variable name")
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise SecretsUnreadable(f"secret {name}: cannot read {path} ({exc.strerror})") from None
        try:
            values[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretsUnreadable(f"secret {name}: {path} is not UTF-8 text") from None
    environ.update(values)      # all or none
    return names

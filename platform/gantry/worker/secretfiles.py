"""Secret files: how a function's secrets reach its container (docs/tenants.md, "Secrets").

The worker opens the secrets a spec names (gantry.tenants.secretbox) and writes each value to
a file named after its variable in a directory of the instance's own on a tmpfs
(GANTRY_SECRETS_DIR, default /dev/shm/gantry-secrets: memory, never the node's disk), which
is bind-mounted read-only at /run/secrets; the runtime reads them into its environment
before it imports the handler.  So a value is never in the image, a label, the container's
Config.Env (`docker inspect` shows the mount's source path, not what is in it) or a log line.

    SECRETS_DIR/            0700, the worker's user: no other user of the node gets past it
      NODE/                 0700
        INSTANCE/           0500, owned by the function's uid when the worker runs as root
          OPENAI_API_KEY    0400, likewise (0444 in a 0755 directory when it does not)

The instance's directory goes with its container (stop, remove, a failed start, the orphan
sweep removes any whose container is gone).  Blocking: run in the agent's thread pool.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil

SECRETS_MOUNT = "/run/secrets"
SECRET_VARS_ENV = "GANTRY_SECRET_VARS"      # the variables the runtime reads from SECRETS_MOUNT (names only)
DEFAULT_DIR = "/dev/shm/gantry-secrets"
FUNCTION_UID = 10001                         # containerspec.FUNCTION_USER
_SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$")
_TMPFS = {"tmpfs", "ramfs"}


class SecretFilesError(RuntimeError):
    """The secrets cannot be written where they must be (not a tmpfs, no room); names the path."""


def _part(name: str) -> str:
    """A path component for a node or instance id (a hash when it is not a plain one)."""
    return name if _SAFE.match(name) and name not in (".", "..") else hashlib.sha256(name.encode()).hexdigest()[:32]


def node_dir(root: str, node: str) -> str:
    return os.path.join(root, _part(node))


def instance_dir(root: str, node: str, instance: str) -> str:
    return os.path.join(node_dir(root, node), _part(instance))


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The type of the filesystem PATH (an existing directory) is on, from the mount table:
    the longest mount point that contains it."""
    real = os.path.realpath(path)
    best, kind = "", ""
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-")
            except ValueError:
                continue
            point = fields[4].replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fields[sep + 1]
    return kind


def _ensure_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise SecretFilesError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise SecretFilesError(f"{path} belongs to uid {st.st_uid}, not this worker's ({os.geteuid()})")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def write(root: str, node: str, instance: str, values: dict[str, bytes]) -> str:
    """Write VALUES (variable -> value) as the instance's secret files, replacing what was
    there; the instance's directory (the mount source)."""
    _ensure_private_dir(root)
    kind = filesystem_type(root)
    if kind not in _TMPFS:
        raise SecretFilesError(f"GANTRY_SECRETS_DIR {root} is on {kind or 'an unknown filesystem'}, not a tmpfs: "
                               "secrets are kept in memory only (use a directory under /dev/shm or a tmpfs mount)")
    _ensure_private_dir(node_dir(root, node))
    path = instance_dir(root, node, instance)
    as_root = os.geteuid() == 0
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)                 # writable by us while we write, whatever it was
    for old in os.listdir(path):
        if old not in values:
            os.unlink(os.path.join(path, old))
    try:
        for var, value in values.items():
            final = os.path.join(path, var)
            tmp = os.path.join(path, f".{var}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o400)
            try:
                os.write(fd, value)
                if as_root:
                    os.fchown(fd, FUNCTION_UID, FUNCTION_UID)
                else:
                    os.fchmod(fd, 0o444)
            finally:
                os.close(fd)
            os.replace(tmp, final)
    except OSError as exc:
        remove(root, node, instance)
        raise SecretFilesError(f"cannot write the secret files under {path}: {exc.strerror}") from None
    if as_root:
        os.chown(path, FUNCTION_UID, FUNCTION_UID)
        os.chmod(path, 0o500)
    else:
        os.chmod(path, 0o755)             # the node directory (0700) keeps other users out
    return path


def remove(root: str, node: str, instance: str) -> bool:
    """Remove the instance's secret files; True if there were any."""
    if not instance:
        return False
    path = instance_dir(root, node, instance)
    if not os.path.lexists(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def sweep(root: str, node: str, keep: set[str]) -> list[str]:
    """Remove the secret directories of this node whose instance is not in KEEP (a container
    gone while the worker was down, a crash between write and create); the names removed."""
    base = node_dir(root, node)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    wanted = {_part(i) for i in keep if i}
    gone = [n for n in names if n not in wanted]
    for name in gone:
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    return gone

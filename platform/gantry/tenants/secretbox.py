"""Tenants' secrets at rest: sealed with AES-256-GCM under a master key that never enters
Redis (docs/tenants.md, "Secrets").  Pure, apart from reading and creating the key file.

A sealed secret is ``VERSION (1 byte) | key fingerprint (4 bytes) | nonce (12 bytes) |
ciphertext+tag``.  The nonce is random per write (96 bits: the birthday bound is far above any
number of writes one master key sees).  The associated data binds the ciphertext to its
header and to ``TENANT/NAME``, so a sealed value copied to another tenant or name, or with
its header changed, does not open.  The fingerprint (an HMAC of a fixed label under the
master key: it says nothing about the key) tells "sealed under another master key" apart
from "altered", so a wrong key is a clear error, never garbage.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from typing import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..manifest import SECRET_NAME_RE     # one definition: what a manifest's [secrets] names

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
FINGERPRINT_BYTES = 4
HEADER_BYTES = 1 + FINGERPRINT_BYTES + NONCE_BYTES
MAX_VALUE_BYTES = 64 * 1024           # one secret's plaintext (an API key, a certificate, a small JSON)
MAX_SECRETS = 1000                    # secrets per tenant
KEY_ENV = "GANTRY_SECRETS_KEY"
KEY_FILE_ENV = "GANTRY_SECRETS_KEY_FILE"
KEY_FILE_NAME = "secrets.key"         # under gantry up's state folder
_FINGERPRINT_LABEL = b"gantry secrets key fingerprint v1"


class SecretError(ValueError):
    """A secret that cannot be sealed or opened, or a master key that cannot be used; str()
    names the secret (tenant and name) or the setting, never a value."""


class MasterKey:
    """The 32-byte master key and its AES-GCM cipher.  repr() shows only the fingerprint."""

    __slots__ = ("_aead", "fingerprint")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise SecretError(f"the secrets master key must be {KEY_BYTES} bytes, got "
                              f"{len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__}")
        self._aead = AESGCM(bytes(key))
        self.fingerprint = hmac.new(bytes(key), _FINGERPRINT_LABEL, hashlib.sha256).digest()[:FINGERPRINT_BYTES]

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self.fingerprint.hex()})"

    def seal(self, tenant: str, name: str, value: bytes) -> bytes:
        check_value(value)
        header = bytes([VERSION]) + self.fingerprint
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + self._aead.encrypt(nonce, bytes(value), _aad(header, tenant, name))

    def open(self, tenant: str, name: str, sealed: bytes) -> bytes:
        where = f"secret {name!r} of tenant {tenant!r}"
        if len(sealed) < HEADER_BYTES + 16:
            raise SecretError(f"{where} is not a sealed secret (too short)")
        if sealed[0] != VERSION:
            raise SecretError(f"{where} has format version {sealed[0]}; this Gantry reads version {VERSION}")
        header, nonce = sealed[:1 + FINGERPRINT_BYTES], sealed[1 + FINGERPRINT_BYTES:HEADER_BYTES]
        if header[1:] != self.fingerprint:
            raise SecretError(f"{where} was sealed under another master key (fingerprint {header[1:].hex()}, "
                              f"this one's is {self.fingerprint.hex()}): set {KEY_FILE_ENV} or {KEY_ENV} to "
                              "the key it was set with, or set the secret again")
        try:
            return self._aead.decrypt(nonce, sealed[HEADER_BYTES:], _aad(header, tenant, name))
        except InvalidTag:
            raise SecretError(f"{where} does not decrypt: it was sealed for another tenant or name, "
                              "or altered in Redis; set it again") from None


def _aad(header: bytes, tenant: str, name: str) -> bytes:
    return header + f"{tenant}/{name}".encode()


def check_name(name: object) -> str:
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        raise SecretError(f"secret name: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}, got {str(name)[:70]!r}")
    return name


def check_value(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise SecretError("value: expected bytes")
    if not value:
        raise SecretError("value: expected a non-empty value")
    if len(value) > MAX_VALUE_BYTES:
        raise SecretError(f"value: {len(value)} bytes is over the limit of {MAX_VALUE_BYTES} bytes (64 KiB)")
    if b"\0" in value:
        # it becomes an environment variable, which cannot hold a NUL byte
        raise SecretError("value: must not contain a NUL byte (it is delivered as an environment variable)")
    return bytes(value)


# --- the master key: where it comes from ----------------------------------------------------

def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str, where: str) -> MasterKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where}: expected {KEY_BYTES} bytes in base64 (44 characters), "
                          "as `head -c 32 /dev/urandom | base64` makes") from None
    if len(raw) != KEY_BYTES:
        raise SecretError(f"{where}: expected {KEY_BYTES} bytes in base64, got {len(raw)} bytes")
    return MasterKey(raw)


def read_key_file(path: str) -> MasterKey:
    """The master key in PATH (base64); refused when the file is readable or writable by its
    group or others: the key opens every tenant's secrets."""
    where = f"{KEY_FILE_ENV} {path}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise SecretError(f"{where}: cannot open ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SecretError(f"{where}: not a regular file")
        if mode & 0o077:
            raise SecretError(f"{where}: mode {stat.S_IMODE(mode):04o} lets its group or others read it; "
                              f"chmod 600 {path}")
        with os.fdopen(fd, "r", closefd=False) as f:
            text = f.read(1024)
    finally:
        os.close(fd)
    return decode_key(text, where)


def from_env(env: Mapping[str, str] | None = None) -> MasterKey | None:
    """The master key from GANTRY_SECRETS_KEY (base64) or the file GANTRY_SECRETS_KEY_FILE;
    None when neither is set (secrets cannot be set or delivered then).  SecretError when one
    is set but unusable, so a component stops at start with the cause."""
    env = os.environ if env is None else env
    text, path = (env.get(KEY_ENV) or "").strip(), (env.get(KEY_FILE_ENV) or "").strip()
    if text and path:
        raise SecretError(f"set {KEY_ENV} or {KEY_FILE_ENV}, not both")
    if text:
        return decode_key(text, KEY_ENV)
    if path:
        return read_key_file(path)
    return None


def ensure_key_file(state_dir: str) -> str:
    """STATE_DIR/secrets.key, made (32 random bytes, base64, mode 0600) when missing; its path.
    An existing one is kept (and checked by read_key_file when a component loads it)."""
    path = os.path.join(state_dir, KEY_FILE_NAME)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(encode_key(new_key()) + "\n")
    return path

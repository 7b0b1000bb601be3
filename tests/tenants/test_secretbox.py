"""Secrets at rest (gantry.tenants.secretbox): AES-GCM bound to tenant and name, a wrong
master key told apart from an altered value, and the master key's file refused when others
may read it.  Pure (the key file tests use a temporary folder)."""
from __future__ import annotations

import base64
import os

import pytest

from gantry.tenants import secretbox
from gantry.tenants.secretbox import MasterKey, SecretError


@pytest.fixture
def key() -> MasterKey:
    return MasterKey(os.urandom(32))


def test_seal_then_open_gives_the_value_and_no_plaintext_is_in_the_sealed_bytes(key):
    value = b"sk-live-" + os.urandom(8).hex().encode()
    sealed = key.seal("acme", "openai", value)
    assert value not in sealed and sealed[0] == secretbox.VERSION and sealed[1:5] == key.fingerprint
    assert key.open("acme", "openai", sealed) == value
    # a fresh nonce per write: the same value sealed twice differs
    assert key.seal("acme", "openai", value) != sealed


@pytest.mark.parametrize("tenant, name", [("beta", "openai"), ("acme", "other"), ("acme", "openai2")])
def test_a_sealed_value_copied_to_another_tenant_or_name_does_not_open(key, tenant, name):
    sealed = key.seal("acme", "openai", b"value")
    with pytest.raises(SecretError) as err:
        key.open(tenant, name, sealed)
    assert f"secret {name!r} of tenant {tenant!r} does not decrypt" in str(err.value)


def test_an_altered_value_does_not_open(key):
    sealed = bytearray(key.seal("acme", "openai", b"value"))
    sealed[-1] ^= 1
    with pytest.raises(SecretError, match="does not decrypt"):
        key.open("acme", "openai", bytes(sealed))


def test_another_master_key_is_a_clear_error_naming_both_fingerprints(key):
    sealed = key.seal("acme", "openai", b"value")
    other = MasterKey(os.urandom(32))
    with pytest.raises(SecretError) as err:
        other.open("acme", "openai", sealed)
    text = str(err.value)
    assert "sealed under another master key" in text and key.fingerprint.hex() in text
    assert other.fingerprint.hex() in text
    assert key.fingerprint.hex() in repr(key) and "MasterKey(fingerprint=" in repr(key)


def test_another_format_version_and_a_truncated_value_are_refused(key):
    sealed = key.seal("acme", "openai", b"value")
    with pytest.raises(SecretError, match="format version 2"):
        key.open("acme", "openai", b"\x02" + sealed[1:])
    with pytest.raises(SecretError, match="too short"):
        key.open("acme", "openai", sealed[:20])


@pytest.mark.parametrize("value, message", [
    (b"", "non-empty"), (b"a" * (64 * 1024 + 1), "over the limit of 65536 bytes"), (b"a\0b", "NUL")])
def test_values_are_bounded(key, value, message):
    with pytest.raises(SecretError, match=message):
        key.seal("acme", "openai", value)
    assert key.open("acme", "x", key.seal("acme", "x", b"a" * 64 * 1024)) == b"a" * 64 * 1024


def test_key_file_is_made_0600_once_and_read_back(tmp_path):
    path = secretbox.ensure_key_file(str(tmp_path / "state"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    first = open(path).read()
    assert secretbox.ensure_key_file(str(tmp_path / "state")) == path and open(path).read() == first
    assert len(base64.b64decode(first)) == 32
    loaded = secretbox.from_env({"GANTRY_SECRETS_KEY_FILE": path})
    assert loaded.fingerprint == MasterKey(base64.b64decode(first)).fingerprint


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused(tmp_path, mode):
    path = tmp_path / "secrets.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode())
    path.chmod(mode)
    with pytest.raises(SecretError) as err:
        secretbox.from_env({"GANTRY_SECRETS_KEY_FILE": str(path)})
    assert f"mode {mode:04o}" in str(err.value) and "chmod 600" in str(err.value)


def test_bad_keys_and_settings_are_clear_errors(tmp_path):
    assert secretbox.from_env({}) is None
    with pytest.raises(SecretError, match="expected 32 bytes in base64"):
        secretbox.from_env({"GANTRY_SECRETS_KEY": "not base64!"})
    with pytest.raises(SecretError, match="got 16 bytes"):
        secretbox.from_env({"GANTRY_SECRETS_KEY": base64.b64encode(os.urandom(16)).decode()})
    with pytest.raises(SecretError, match="not both"):
        secretbox.from_env({"GANTRY_SECRETS_KEY": "x", "GANTRY_SECRETS_KEY_FILE": "y"})
    with pytest.raises(SecretError, match="cannot open"):
        secretbox.from_env({"GANTRY_SECRETS_KEY_FILE": str(tmp_path / "absent")})
    good = base64.b64encode(os.urandom(32)).decode()
    assert secretbox.from_env({"GANTRY_SECRETS_KEY": good}) is not None


@pytest.mark.parametrize("name", ["", "-x", "has space", "a/b", "x" * 64, 3])
def test_secret_names_are_checked(name):
    with pytest.raises(SecretError, match="secret name"):
        secretbox.check_name(name)

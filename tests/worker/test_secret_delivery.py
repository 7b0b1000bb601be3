"""Delivering secrets (worker.secretfiles, commands.deliver_secrets, the runtime's
secretenv): files on a tmpfs only, private to the function's uid, gone with the instance;
a secret of another tenant is neither found nor opened; the runtime sets os.environ from
the files and fails with the variable's name when one is missing.  Real Redis; the
container-level checks are in tests/e2e/test_secrets.py."""
from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from types import SimpleNamespace

import pytest

from gantry import keys
from gantry.manifest import FunctionSpec
from gantry.tenants.secretbox import MasterKey, SecretError
from gantry.tenants.secretstore import SecretStore
from gantry.worker import secretfiles
from gantry.worker.commands import deliver_secrets
from gantry_runtime import secretenv


@pytest.fixture
def shm_root():
    root = f"/dev/shm/gantry-test-secrets-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_files_are_private_on_a_tmpfs_and_removed_with_the_instance(shm_root):
    path = secretfiles.write(shm_root, "n1", "i-1", {"OPENAI_API_KEY": b"v1", "DB": b"v2"})
    assert path == os.path.join(shm_root, "n1", "i-1") and sorted(os.listdir(path)) == ["DB", "OPENAI_API_KEY"]
    assert os.stat(shm_root).st_mode & 0o777 == 0o700 and os.stat(os.path.join(shm_root, "n1")).st_mode & 0o777 == 0o700
    st = os.stat(os.path.join(path, "OPENAI_API_KEY"))
    if os.geteuid() == 0:
        assert (st.st_mode & 0o777, st.st_uid, os.stat(path).st_mode & 0o777) == (0o400, 10001, 0o500)
    else:
        assert st.st_mode & 0o777 == 0o444
    assert open(os.path.join(path, "OPENAI_API_KEY"), "rb").read() == b"v1"
    # a start again (rotation, a reused container) replaces the files: a dropped variable goes
    secretfiles.write(shm_root, "n1", "i-1", {"OPENAI_API_KEY": b"v3"})
    assert os.listdir(path) == ["OPENAI_API_KEY"] and open(os.path.join(path, "OPENAI_API_KEY"), "rb").read() == b"v3"
    secretfiles.write(shm_root, "n1", "i-2", {"X": b"x"})
    assert secretfiles.sweep(shm_root, "n1", keep={"i-2"}) == ["i-1"] and not os.path.exists(path)
    assert secretfiles.remove(shm_root, "n1", "i-2") is True and os.listdir(os.path.join(shm_root, "n1")) == []
    assert secretfiles.remove(shm_root, "n1", "i-2") is False


def test_a_directory_that_is_not_a_tmpfs_is_refused(tmp_path):
    kind = secretfiles.filesystem_type(str(tmp_path))
    assert kind not in ("tmpfs", "ramfs"), f"{tmp_path} is on {kind}: this test needs a disk-backed folder"
    with pytest.raises(secretfiles.SecretFilesError, match="not a tmpfs"):
        secretfiles.write(str(tmp_path / "secrets"), "n1", "i-1", {"X": b"x"})
    assert not (tmp_path / "secrets" / "n1").exists()
    assert secretfiles.filesystem_type("/dev/shm") == "tmpfs"


def _agent(aredis, root: str, key: MasterKey | None):
    async def blocking(fn, *args):
        return await asyncio.to_thread(fn, *args)
    return SimpleNamespace(master_key=key, secret_store=SecretStore(aredis), node_id="n1", blocking=blocking,
                           settings=SimpleNamespace(secrets_dir=root))


def _spec(tenant: str, secrets: dict[str, str]) -> FunctionSpec:
    return FunctionSpec.from_dict({"name": "fn", "handler": "main:handle", "tenant": tenant, "secrets": secrets})


async def test_delivery_opens_only_the_tenants_own_secrets(aredis, shm_root):
    key = MasterKey(os.urandom(32))
    store = SecretStore(aredis)
    await store.put("beta", "openai", key.seal("beta", "openai", b"beta-value"))
    agent = _agent(aredis, shm_root, key)

    # acme names beta's secret: acme has none of that name
    with pytest.raises(SecretError) as err:
        await deliver_secrets(agent, _spec("acme", {"OPENAI_API_KEY": "openai"}), "i-1")
    assert "tenant 'acme' has no secret named 'openai'" in str(err.value) and "beta-value" not in str(err.value)

    # beta's ciphertext copied into acme's record does not open there (bound to beta/openai)
    await aredis.hset(keys.tenant_secrets("acme"), "openai", await aredis.hget(keys.tenant_secrets("beta"), "openai"))
    with pytest.raises(SecretError) as err:
        await deliver_secrets(agent, _spec("acme", {"OPENAI_API_KEY": "openai"}), "i-1")
    assert "secret 'openai' of tenant 'acme' does not decrypt" in str(err.value)
    assert not os.path.exists(os.path.join(shm_root, "n1", "i-1"))

    path = await deliver_secrets(agent, _spec("beta", {"OPENAI_API_KEY": "openai"}), "i-2")
    assert open(os.path.join(path, "OPENAI_API_KEY"), "rb").read() == b"beta-value"
    assert await deliver_secrets(agent, _spec("beta", {}), "i-3") is None

    # no master key: the cause names the setting
    with pytest.raises(SecretError, match="GANTRY_SECRETS_KEY_FILE"):
        await deliver_secrets(_agent(aredis, shm_root, None), _spec("beta", {"OPENAI_API_KEY": "openai"}), "i-4")


def test_the_runtime_sets_the_listed_variables_from_their_files(tmp_path):
    (tmp_path / "OPENAI_API_KEY").write_bytes("sk-é".encode())
    env = {"GANTRY_SECRET_VARS": "OPENAI_API_KEY"}
    assert secretenv.load(env, str(tmp_path)) == ["OPENAI_API_KEY"]
    assert env["OPENAI_API_KEY"] == "sk-é"
    assert secretenv.load({}, str(tmp_path)) == []
    env = {"GANTRY_SECRET_VARS": "OPENAI_API_KEY,MISSING"}
    with pytest.raises(secretenv.SecretsUnreadable) as err:
        secretenv.load(env, str(tmp_path))
    assert "secret MISSING" in str(err.value) and "sk-" not in str(err.value)
    assert "OPENAI_API_KEY" not in env           # all or none

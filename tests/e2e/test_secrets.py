"""Tenants' secrets end to end (docs/tenants.md, "Secrets"): set with `gantry secrets set`,
named by a manifest's [secrets], delivered to the container as tmpfs files the runtime reads
into os.environ; and the value is absent from every other place: the image, the container's
labels and Config.Env, every API answer, the components' logs and the function's log stream,
and Redis (only ciphertext there).  A worker with another master key fails the start with a
cause that names the secret and the tenant, never the value.  Real Docker, real Redis, the
platform as separate processes."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from gantry import keys
from gantry.client import APIError

from conftest import FAST_WORKER

pytestmark = [pytest.mark.docker, pytest.mark.redis]
FUNCTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "functions", "vf-secret")


@pytest.fixture
def secrets_env(tmp_path_factory, monkeypatch):
    """A master key file (0600) and a secrets directory on /dev/shm for every component the
    platform fixture starts (it is requested first, so its environment is theirs)."""
    key = os.urandom(32)
    path = tmp_path_factory.mktemp("secrets-key") / "secrets.key"
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    secrets_dir = f"/dev/shm/gantry-test-secrets-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GANTRY_SECRETS_KEY_FILE", str(path))
    monkeypatch.delenv("GANTRY_SECRETS_KEY", raising=False)
    monkeypatch.setenv("GANTRY_SECRETS_DIR", secrets_dir)
    yield secrets_dir
    shutil.rmtree(secrets_dir, ignore_errors=True)


def gantry(platform, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GANTRY_URL": platform.client.url, "GANTRY_API_KEY": platform.client.api_key,
           "XDG_CONFIG_HOME": platform.tmp}
    proc = subprocess.run([sys.executable, "-m", "gantry.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr + platform.logs()
    return proc


def all_logs(platform) -> str:
    """Every line the components (gateway, scheduler, workers) wrote, whole."""
    out = []
    for name in sorted(os.listdir(platform.tmp)):
        path = os.path.join(platform.tmp, name)
        if name.endswith(".log") and os.path.isfile(path):
            with open(path, errors="replace") as f:
                out.append(f.read())
    assert out, "no component logs: nothing was checked"
    return "\n".join(out)


def redis_dump(url: str) -> bytes:
    """Every key and every value of the platform's Redis database, as bytes."""
    import redis

    r = redis.Redis.from_url(url)
    out = []
    try:
        for key in r.scan_iter(count=1000):
            kind = r.type(key).decode()
            if kind == "string":
                value = [r.get(key)]
            elif kind == "hash":
                value = [x for kv in r.hgetall(key).items() for x in kv]
            elif kind == "set":
                value = list(r.smembers(key))
            elif kind == "zset":
                value = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            elif kind == "list":
                value = r.lrange(key, 0, -1)
            elif kind == "stream":
                value = [x for _, fields in r.xrange(key) for kv in fields.items() for x in kv]
            else:
                value = []
            out += [key, *[v for v in value if v is not None]]
    finally:
        r.close()
    return b"\n".join(out)


def test_a_secret_reaches_the_function_and_is_absent_from_every_other_place(secrets_env, platform, docker_client):
    plain = "sk-test-" + uuid.uuid4().hex          # unique: found anywhere, it leaked from here
    secret = plain.encode()

    # a deploy naming a secret the tenant does not have is refused, naming it
    refused = gantry(platform, "deploy", FUNCTION, "--wait", "0", ok=False)
    assert refused.returncode == 1
    assert "no secret named 'openai'" in refused.stderr and "tenant 'default'" in refused.stderr, refused.stderr

    # set from stdin (one trailing newline dropped, as `echo "$KEY" |` adds it)
    done = gantry(platform, "secrets", "set", "openai", stdin=plain + "\n")
    assert "secret openai created in tenant default" in done.stderr
    assert plain not in done.stdout + done.stderr

    deployed = gantry(platform, "deploy", FUNCTION, "--wait", "60")
    assert plain not in deployed.stdout + deployed.stderr
    status, body = platform.invoke("vf-secret")
    assert status == 200, body
    seen = json.loads(body)
    assert seen["sha256"] == hashlib.sha256(secret).hexdigest()       # the function sees the value
    assert seen["at_import"] is True                                   # set before the handler's import
    assert seen["in_proc_environ"] is False                            # not in /proc/PID/environ
    assert seen["files"] == ["OPENAI_API_KEY"] and seen["uid"] == 10001
    assert seen["secret_vars"] == "OPENAI_API_KEY"

    # the container: not in its labels or Config.Env; /run/secrets is a read-only bind of a tmpfs directory
    containers = docker_client.containers.list(filters={"label": "gantry.function=vf-secret"})
    assert len(containers) == 1
    attrs = containers[0].attrs
    assert secret not in json.dumps(attrs["Config"]).encode()
    assert secret not in json.dumps(attrs["Config"].get("Labels") or {}).encode()
    assert not any(plain in e for e in attrs["Config"]["Env"])
    mounts = [m for m in attrs["Mounts"] if m["Destination"] == "/run/secrets"]
    assert len(mounts) == 1 and mounts[0]["RW"] is False and mounts[0]["Source"].startswith(secrets_env)
    assert secret not in json.dumps(attrs).encode()                    # the whole `docker inspect`
    source = mounts[0]["Source"]
    assert sorted(os.listdir(source)) == ["OPENAI_API_KEY"]
    st = os.stat(os.path.join(source, "OPENAI_API_KEY"))
    assert (st.st_mode & 0o777, st.st_uid) == (0o400, 10001)

    # the image: its configuration, history and every layer
    image = docker_client.images.get(attrs["Config"]["Image"])
    assert secret not in json.dumps(image.attrs).encode()
    assert secret not in json.dumps(image.history()).encode()
    assert not any(secret in chunk for chunk in image.save(named=False))

    # every API answer
    answers = [platform.client.call("GET", "/v1/functions"), platform.function("vf-secret"),
               platform.client.call("GET", "/v1/secrets"),
               platform.client.call("GET", "/v1/functions/vf-secret/logs?limit=1000")]
    listed = answers[2]["secrets"]
    assert [(s["name"], s["functions"]) for s in listed] == [("openai", ["vf-secret"])]
    assert answers[1]["spec"]["secrets"] == {"OPENAI_API_KEY": "openai"}
    assert not any(secret in json.dumps(a).encode() for a in answers)
    assert answers[3]["entries"], "the function's log stream is empty: nothing was checked"

    # the components' logs, then Redis: only the sealed value there
    assert plain not in all_logs(platform)
    dump = redis_dump(platform.redis_url)
    assert secret not in dump and base64.b64encode(secret) not in dump
    import redis
    r = redis.Redis.from_url(platform.redis_url)
    sealed = r.hget(keys.tenant_secrets("default"), "openai")
    r.close()
    assert sealed and len(sealed) == 1 + 4 + 12 + len(secret) + 16       # version, fingerprint, nonce, tag

    # removing the function removes its instance and, with it, the secret files
    gantry(platform, "rm", "vf-secret")
    platform.wait("the secret files to go", lambda: not os.path.exists(source), timeout=30)
    gantry(platform, "secrets", "rm", "openai")
    assert platform.client.call("GET", "/v1/secrets")["secrets"] == []


def test_a_worker_with_another_master_key_fails_the_start_naming_the_secret(secrets_env, platform):
    plain = "sk-test-" + uuid.uuid4().hex
    gantry(platform, "secrets", "set", "openai", stdin=plain)
    # the only worker now has another key than the gateway that sealed the secret
    for name in [n for n in platform.procs if n.startswith("e2e-")]:
        platform.kill(name)
    node = f"e2e-{platform.run_id}-n2"
    platform.start(node, "worker", GANTRY_NODE_ID=node, GANTRY_SECRETS_KEY_FILE="",
                   GANTRY_SECRETS_KEY=base64.b64encode(os.urandom(32)).decode(), **FAST_WORKER)
    platform.wait("the new node", lambda: any(n["id"] == node for n in platform.client.call("GET", "/v1/nodes")["nodes"]))
    gantry(platform, "deploy", FUNCTION, "--wait", "0")
    with pytest.raises(APIError) as failed:
        b"".join(platform.client.invoke("vf-secret", b"{}", "application/json"))
    assert failed.value.status == 502 and failed.value.code == "function_start_failed", failed.value
    message = str(failed.value)
    assert "secret 'openai' of tenant 'default' was sealed under another master key" in message, message
    assert plain not in message and plain not in all_logs(platform)
    fn = platform.function("vf-secret")
    assert "sealed under another master key" in fn["start_failed"]["cause"]
    node_dir = os.path.join(secrets_env, node)                    # the failed start left no files
    assert not os.path.exists(node_dir) or os.listdir(node_dir) == []

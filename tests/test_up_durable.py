"""`gantry up`'s own Redis keeps its data under the state folder (append-only file, fsync
every second) and reads it back on the next start, on the same port when it is free; the
admin key's hash is part of that data, so the same key keeps working.  Real redis-server
processes on loopback ports, each in the test's own folder."""
from __future__ import annotations

import os
import signal

import pytest
import redis

from gantry.settings import hash_key
from gantry.store import Store
from gantry.up import AOF_DIR, REDIS_DIR, OwnRedis, settle_admin_key


def _client(own: OwnRedis) -> redis.Redis:
    return redis.Redis.from_url(own.url)


def test_the_data_survives_a_stop_and_start_on_the_same_port(tmp_path):
    state = str(tmp_path / "state")
    own = OwnRedis.start(state, durable=True)
    try:
        r = _client(own)
        r.hset("fn:hello", mapping={"latest": "3"})
        r.xadd("fn:hello:logs", {"line": "kept"})
        r.close()
        port = own.port
    finally:
        own.stop()
    assert own.process.poll() is not None
    assert os.listdir(os.path.join(state, REDIS_DIR, AOF_DIR))           # the append-only files stay
    again = OwnRedis.start(state, durable=True)
    try:
        assert again.port == port                                        # it was free again
        r = _client(again)
        assert r.hget("fn:hello", "latest") == b"3"
        assert r.xrange("fn:hello:logs")[0][1] == {b"line": b"kept"}
        assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
        r.close()
    finally:
        again.stop()


def test_a_taken_port_gives_a_new_one_and_the_data_follows(tmp_path):
    import socket

    state = str(tmp_path / "state")
    own = OwnRedis.start(state, durable=True)
    _client(own).set("k", "v")
    own.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", own.port))
        squatter.listen()
        moved = OwnRedis.start(state, durable=True)
        try:
            assert moved.port != own.port
            assert _client(moved).get("k") == b"v"
        finally:
            moved.stop()


def test_one_state_folder_serves_one_gantry_up_and_reset_wipes_it(tmp_path):
    state = str(tmp_path / "state")
    own = OwnRedis.start(state, durable=True)
    try:
        _client(own).set("k", "v")
        with pytest.raises(RuntimeError, match="another gantry up is using"):
            OwnRedis.start(state, durable=True)
    finally:
        own.stop()
    fresh = OwnRedis.start(state, durable=True, reset=True)
    try:
        assert _client(fresh).get("k") is None
        assert os.path.exists(os.path.join(state, "redis.password"))     # the password stays
    finally:
        fresh.stop()


def test_a_leftover_server_is_stopped_before_its_files_are_reused(tmp_path):
    state = str(tmp_path / "state")
    first = OwnRedis.start(state, durable=True)
    _client(first).set("k", "v")
    os.close(first._lock)             # as if gantry up died and left its redis-server running
    first._lock = None
    second = OwnRedis.start(state, durable=True)
    try:
        first.process.wait(10)        # the leftover was stopped (and flushed) first
        assert _client(second).get("k") == b"v"
    finally:
        second.stop()
        if first.process.poll() is None:
            first.process.send_signal(signal.SIGKILL)


def test_without_durable_the_data_goes_with_the_server(tmp_path):
    own = OwnRedis.start(str(tmp_path), durable=False)
    own.stop()
    assert not os.path.exists(own.workdir)
    assert not os.path.exists(os.path.join(str(tmp_path), REDIS_DIR))


async def test_the_admin_key_is_kept_unless_given_and_new_only_when_none(aredis):
    store = Store(aredis)
    first = await settle_admin_key(store, None, None)
    assert first.how == "new" and first.key.startswith("gk_")
    assert await store.admin_key_hash() == hash_key(first.key)
    kept = await settle_admin_key(store, None, first.key)               # the config file holds it
    assert (kept.how, kept.key) == ("kept", first.key)
    unknown = await settle_admin_key(store, None, "gk_some_other_key")  # a config of another platform
    assert (unknown.how, unknown.key) == ("kept", None)
    assert await store.admin_key_hash() == hash_key(first.key)          # never replaced
    given = await settle_admin_key(store, "gk_given", first.key)
    assert (given.how, given.key) == ("given", "gk_given")
    assert await store.admin_key_hash() == hash_key("gk_given")

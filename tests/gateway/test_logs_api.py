"""GET /v1/functions/NAME/logs filters on the gateway (since, instance, level, tail), on a
real Redis; a removed function's logs go with it, and lines shipped after the removal (its
draining instances) are dropped rather than bringing the stream back."""
from __future__ import annotations

import json
import time

from gantry import keys
from gantry.store import Store

from .support import AUTH, gateway, register_function


def _add(redis_client, entry_id: str, instance: str, line) -> str:
    text = line if isinstance(line, str) else json.dumps(line)
    return redis_client.xadd(keys.function_logs("fn"), {"instance": instance, "line": text}, id=entry_id).decode()


async def _page(client, query: str) -> dict:
    resp = await client.get(f"/v1/functions/fn/logs?{query}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_filters_since_instance_level_and_tail(redis_url, redis_client):
    now_ms = int(time.time() * 1000)
    old = now_ms - 3_600_000                                  # an hour ago
    _add(redis_client, f"{old}-0", "fn-aaaaaaaaaaaa", {"level": "error", "msg": "old error"})
    _add(redis_client, f"{now_ms - 1000}-0", "fn-aaaaaaaaaaaa", {"level": "info", "msg": "a info"})
    _add(redis_client, f"{now_ms - 900}-0", "fn-bbbbbbbbbbbb", {"level": "warning", "msg": "b warning"})
    _add(redis_client, f"{now_ms - 800}-0", "fn-bbbbbbbbbbbb", "b plain print")
    last = _add(redis_client, f"{now_ms - 700}-0", "fn-aaaaaaaaaaaa", {"level": "critical", "msg": "a critical"})

    def msgs(page):
        return [json.loads(e["line"])["msg"] if e["line"].startswith("{") else e["line"] for e in page["entries"]]

    async with gateway(redis_url) as client:
        page = await _page(client, "since=10m")
        assert msgs(page) == ["a info", "b warning", "b plain print", "a critical"]
        assert page["cursor"] == last and page["more"] is False
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((old + 1000) / 1000))
        assert msgs(await _page(client, f"since={iso}")) == msgs(page)
        assert msgs(await _page(client, "level=warning")) == ["old error", "b warning", "a critical"]
        assert msgs(await _page(client, "level=WARN&since=10m&instance=aaaa")) == ["a critical"]
        assert msgs(await _page(client, "instance=fn-bbbb")) == ["b warning", "b plain print"]

        page = await _page(client, "tail=2")
        assert msgs(page) == ["b plain print", "a critical"] and page["cursor"] == last and not page["more"]
        assert msgs(await _page(client, "tail=2&level=error")) == ["old error", "a critical"]
        page = await _page(client, "tail=3&instance=bbbbbbbb")
        assert msgs(page) == ["b warning", "b plain print"] and page["cursor"] == last   # follow from the newest

        # a full page of filtered matches says more may follow, with the cursor at its last match
        page = await _page(client, "level=warning&limit=2")
        assert msgs(page) == ["old error", "b warning"] and page["more"] is True
        page = await _page(client, f"level=warning&limit=2&after={page['cursor']}")
        assert msgs(page) == ["a critical"] and page["more"] is False

        for query, field in (("since=yesterday", "since"), ("level=loud", "level"), ("tail=0", "tail"),
                             ("tail=1001", "tail"), ("tail=x", "tail")):
            resp = await client.get(f"/v1/functions/fn/logs?{query}", headers=AUTH)
            body = await resp.json()
            assert resp.status == 400 and body["error"]["message"].startswith(f"{field}: "), (query, body)


async def test_logs_go_with_the_function_and_late_lines_are_dropped(redis_url, redis_client, aredis):
    register_function(redis_client, "fn")
    store = Store(aredis)
    await store.append_logs([("fn", "fn-aaaaaaaaaaaa", "before"), ("other", "o-1", "no function: dropped")], 100)
    assert [f[b"line"] for _, f in redis_client.xrange(keys.function_logs("fn"))] == [b"before"]
    assert not redis_client.exists(keys.function_logs("other"))
    async with gateway(redis_url) as client:
        assert [e["line"] for e in (await _page(client, ""))["entries"]] == ["before"]
        resp = await client.delete("/v1/functions/fn", headers=AUTH)
        assert resp.status == 200
        assert not redis_client.exists(keys.function_logs("fn"))
        # a draining instance's last lines arrive after the delete: they do not bring it back
        await store.append_logs([("fn", "fn-aaaaaaaaaaaa", "after the delete")], 100)
        assert not redis_client.exists(keys.function_logs("fn"))
        assert (await _page(client, ""))["entries"] == []


async def test_append_logs_caps_each_stream_about_maxlen(redis_client, aredis):
    register_function(redis_client, "fn")
    await Store(aredis).append_logs([("fn", "fn-a", f"line {i}") for i in range(3000)], 100)
    # MAXLEN ~ trims whole macro nodes only: about MAXLEN, never less, never the whole 3000
    assert 100 <= redis_client.xlen(keys.function_logs("fn")) < 3000
    last = redis_client.xrevrange(keys.function_logs("fn"), count=1)[0][1][b"line"]
    assert last == b"line 2999"

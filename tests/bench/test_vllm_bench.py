"""The vLLM section of `gantry bench` (gantry.bench.vllm): its pure parts (reading an event
stream, the token figures, the summary paired by round, the table) with synthetic inputs,
and the reasons it gives for not running.  Its real run needs the vLLM image and is not
part of the quick bench."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from gantry.bench import vllm


def test_sse_payloads_takes_complete_events_and_keeps_a_partial_one():
    buf = bytearray(b'data: {"a": 1}\n\ndata: {"b"')
    assert vllm.sse_payloads(buf) == [b'{"a": 1}']
    assert buf == bytearray(b'data: {"b"')
    buf += b': 2}\n\n: a comment\n\ndata: [DONE]\n\n'
    assert vllm.sse_payloads(buf) == [b'{"b": 2}', b"[DONE]"]      # a comment carries no data
    assert buf == bytearray()


def test_token_figures_rate_is_after_the_first_token():
    # 5 tokens: the first at 200 ms, then one every 50 ms
    times = [0.2, 0.25, 0.3, 0.35, 0.4]
    f = vllm.token_figures(times, 5)
    assert f["ttft_s"] == 0.2 and f["last_s"] == 0.4 and f["tokens"] == 5
    assert f["tokens_per_s"] == pytest.approx(4 / 0.2)               # 20 tokens/s
    # the usage's count wins over the events (an event may carry more than one token)
    assert vllm.token_figures([0.1, 0.3], 9)["tokens_per_s"] == pytest.approx(8 / 0.2)
    assert vllm.token_figures([0.1], None)["tokens_per_s"] is None   # one token: no rate
    assert vllm.token_figures([], 3) == {"ttft_s": None, "last_s": None, "tokens": 3, "token_events": 0,
                                         "tokens_per_s": None}


def _run(ttft: float, rate: float, n: int = 32) -> dict:
    times = [ttft + i / rate for i in range(n)]
    return vllm.token_figures(times, n)


def synthetic() -> dict:
    cold = [{"ttft_s": 31.0, "ready_s": 30.5, "retries_503": 0}, {"ttft_s": 35.0, "ready_s": 34.2, "retries_503": 1},
            {"ttft_s": 29.0, "ready_s": 28.9, "retries_503": 0}]
    # three rounds; the gateway adds 2, 3 and 4 ms to the first token and decodes at the same rate
    warm = {"direct": [_run(0.040, 100), _run(0.050, 80), _run(0.045, 90)],
            "gateway": [_run(0.042, 100), _run(0.053, 80), _run(0.049, 90)]}
    return vllm.summarize(cold, warm)


def test_summary_pairs_the_gateway_with_the_engine_by_round():
    s = synthetic()
    assert s["cold"]["ttft_ms"]["median"] == 31000.0 and (s["cold"]["ttft_ms"]["min"], s["cold"]["ttft_ms"]["max"]) \
        == (29000.0, 35000.0)
    assert s["cold"]["retries_503"] == 1 and s["cold"]["repeats"] == 3
    assert s["gateway_minus_direct_ttft_ms"]["samples"] == pytest.approx([2.0, 3.0, 4.0])
    assert s["gateway_minus_direct_ttft_ms"]["median"] == pytest.approx(3.0)
    assert s["gateway_over_direct_tokens_per_s"]["median"] == pytest.approx(1.0)
    assert s["paths"]["direct"]["tokens_per_s"]["median"] == pytest.approx(90.0)
    assert s["paths"]["gateway"]["ttft_ms"]["median"] == pytest.approx(49.0)
    assert s["warm_repeats"] == 3


def test_render_shows_cold_warm_and_the_difference():
    v = {"function": {"name": "bench-vllm", "source": "examples/chat-vllm", "engine": "cpu", "cpu": 2.0,
                      "model": "tiny random Llama", "served_name": "chat-vllm"},
         "max_tokens": 32, "summary": synthetic(), "tokens_counted": {"gateway_counted": 320.0, "client_saw": 320}}
    text = "\n".join(vllm.render(v))
    assert "| cold, from zero (gateway) | 31,000 [29,000–35,000] | 30,500 [28,900–34,200] |" in text
    assert "| gateway − direct | 3.0 [2.0–4.0] | × 1.000 [1.000–1.000] |  |" in text
    assert "| direct | 45.0 [40.0–50.0] | 90.0 [80.0–100.0] |" in text
    assert "(1 answers 503 `no_capacity` retried)" in text
    assert "320, against 320 in the usage" in text
    json.dumps(v)      # the results file is JSON


def test_render_of_a_skipped_section_says_why():
    assert vllm.render({"available": False, "why": "skipped: vLLM image not built (x)"}) == [
        "skipped: vLLM image not built (x)"]


def test_measure_skips_without_running_anything(tmp_path):
    ctx = SimpleNamespace(quick=True, repo_root=str(tmp_path), docker=None, stack=None)
    assert "not part of a quick run" in vllm.measure(ctx)["why"]
    ctx.quick = False                     # a checkout without the example: nothing to serve
    out = vllm.measure(ctx)
    assert out["available"] is False and "examples/chat-vllm/make_model.py" in out["why"]

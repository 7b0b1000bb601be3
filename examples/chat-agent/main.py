"""Ask the chat-vllm function (an OpenAI-compatible model behind the gateway) and stream the
answer back, token by token, as it arrives.

Event: {"prompt": "...", "max_tokens": 32}.  The gateway's address comes from CHAT_GATEWAY_URL,
else GANTRY_COORD_URL (where the worker says containers reach the gateway); the key from the
CHAT_API_KEY secret.  Standard library only.
"""
import json
import os
import urllib.error
import urllib.request

MAX_TOKENS = 256


def _gateway() -> str:
    url = os.environ.get("CHAT_GATEWAY_URL") or os.environ.get("GANTRY_COORD_URL") or ""
    if not url:
        raise RuntimeError("no gateway address: set CHAT_GATEWAY_URL, or GANTRY_COORD_URL on the worker")
    return url.rstrip("/")


def handle(event, ctx):
    event = event if isinstance(event, dict) else {}
    prompt = str(event.get("prompt") or "hello")
    max_tokens = max(1, min(int(event.get("max_tokens", 32)), MAX_TOKENS))
    function = os.environ.get("CHAT_FUNCTION", "chat-vllm")
    body = {"model": function, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "stream": True}
    if event.get("ignore_eos"):
        body["ignore_eos"] = True          # vLLM's extension: exactly max_tokens tokens
    req = urllib.request.Request(f"{_gateway()}/v1/invoke/{function}/v1/chat/completions",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {os.environ['CHAT_API_KEY']}",
                                          "Content-Type": "application/json", "Accept": "text/event-stream"})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as exc:
        yield f"[model error {exc.code}: {exc.read()[:300].decode(errors='replace')}]\n"
        return
    with resp:
        for raw in resp:                    # one SSE line at a time, as the engine sends them
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            for choice in json.loads(data).get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
    yield "\n"

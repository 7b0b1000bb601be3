"""Counts words after normalising them with python-slugify (ASCII, lower case).

The event is JSON ``{"text": "...", "top": 10}`` or raw text (any non-JSON content type).
"""
from collections import Counter

from slugify import slugify


def handle(event, ctx):
    if isinstance(event, (bytes, bytearray)):
        event = {"text": bytes(event).decode("utf-8", "replace")}
    if not isinstance(event, dict) or not isinstance(event.get("text"), str):
        raise ValueError('expected {"text": "..."} or a text body')
    words = [w for w in (slugify(raw) for raw in event["text"].split()) if w]
    counts = Counter(words)
    top = int(event.get("top", 10))
    return {
        "words": len(words),
        "unique": len(counts),
        "top": [{"word": w, "count": n} for w, n in counts.most_common(top)],
        "slug": slugify(event["text"], max_length=80),
    }

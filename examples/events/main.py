"""Streams ``count`` Server-Sent Events (default 5) named ``tick``, ``delay`` seconds apart
(default 0.5), each with an id, then one plain ``done`` message; with ``"fail": true`` it
raises instead of saying ``done``, and the stream's last event is the platform's
``event: error`` with ``data: {"code": "function_error", "message": "RuntimeError: ..."}``.

``@sse`` makes the generator's items events: the response is ``text/event-stream`` and each
event reaches the caller the moment it is yielded.  In a browser (through a backend of your
own origin that adds the API key; docs/runtime.md, "Server-Sent Events"):

    const es = new EventSource("/ticks");
    es.addEventListener("tick", e => console.log(e.lastEventId, JSON.parse(e.data)));
    es.onmessage = e => es.close();                          // "done"
    es.addEventListener("error", e => {                      // the platform's error event has data,
      if (e.data) console.error(JSON.parse(e.data));         // the connection's end has none
      es.close();                                            // else EventSource reconnects
    });
"""
import time

from gantry_runtime import Event, sse

MAX_COUNT = 1000


@sse
def handle(event, ctx):
    event = event if isinstance(event, dict) else {}
    count = max(0, min(int(event.get("count", 5)), MAX_COUNT))
    delay = max(0.0, float(event.get("delay", 0.5)))
    for i in range(count):
        if i:
            time.sleep(delay)
        yield Event({"i": i, "of": count}, event="tick", id=i)
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    yield "done"

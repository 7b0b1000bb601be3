"""A few Prometheus counters and gauges, rendered as the text exposition format (0.0.4)."""
from __future__ import annotations

from collections import Counter

UNKNOWN = "_unknown"   # requests for names that are not deployed share one label value


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()   # (function, status)
        self.cold_waits: Counter[str] = Counter()             # requests that waited for an instance
        self.retries: Counter[str] = Counter()                # forwards retried on another instance
        self.upstream_aborts: Counter[str] = Counter()        # streams broken after the headers

    def render(self, inflight: dict[str, int], waiting: dict[str, int]) -> str:
        lines = ["# HELP gantry_gateway_requests_total Invocations answered, by function and status.",
                 "# TYPE gantry_gateway_requests_total counter"]
        for (fn, status), n in sorted(self.requests.items()):
            lines.append(f'gantry_gateway_requests_total{{function="{_label(fn)}",status="{status}"}} {n}')
        for name, help_text, counter in (
                ("cold_waits", "Invocations that waited for a free instance.", self.cold_waits),
                ("retries", "Forwards retried on another instance.", self.retries),
                ("stream_aborts", "Responses aborted after the headers were sent.", self.upstream_aborts)):
            lines += [f"# HELP gantry_gateway_{name}_total {help_text}",
                      f"# TYPE gantry_gateway_{name}_total counter"]
            for fn, n in sorted(counter.items()):
                lines.append(f'gantry_gateway_{name}_total{{function="{_label(fn)}"}} {n}')
        for name, help_text, gauge in (
                ("inflight", "Invocations being forwarded now.", inflight),
                ("waiting", "Invocations waiting for a free instance now.", waiting)):
            lines += [f"# HELP gantry_gateway_{name} {help_text}", f"# TYPE gantry_gateway_{name} gauge"]
            for fn, n in sorted(gauge.items()):
                lines.append(f'gantry_gateway_{name}{{function="{_label(fn)}"}} {n}')
        return "\n".join(lines) + "\n"

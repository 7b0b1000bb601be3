"""Every request of a scenario accounted for: its answer, whether that failure is planned,
and how many times its side effect ran.  Pure: records, side-effect counts and the facts in,
figures out (a test can call it with made-up records)."""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable

from ..stats import percentile
from .load import Record

# Lines of the daemons' logs worth counting: name -> (process name prefix, pattern)
LOG_PATTERNS = {
    "worker_refused_stale_epoch": ("worker", r"refused a command with a stale epoch"),
    "worker_new_redis_generation": ("worker", r"Redis lost its data \(a new generation\)"),
    "worker_registered": ("worker", r"\bregistered\b"),
    "scheduler_fenced_writes_refused": ("scheduler|standby", r"a fenced write for .* was refused"),
    "scheduler_leader_acquired": ("scheduler|standby", r"lease \S+: leader with epoch"),
    "scheduler_lost_leadership": ("scheduler|standby", r"lost leadership"),
    "scheduler_node_suspect": ("scheduler|standby", r"missed its heartbeat: suspect"),
    "scheduler_node_dead": ("scheduler|standby", r"is dead \(no heartbeat"),
    "tracebacks": ("scheduler|standby|gateway|worker", r"^Traceback"),
}


def log_counts(texts: dict[str, str]) -> dict[str, dict[str, int]]:
    """pattern -> {process: matching lines} over the daemons' logs (only non-zero counts)."""
    out: dict[str, dict[str, int]] = {}
    for key, (procs, pattern) in LOG_PATTERNS.items():
        rx = re.compile(pattern, re.M)
        found = {name: len(rx.findall(text)) for name, text in texts.items() if re.fullmatch(procs, name)}
        out[key] = {k: v for k, v in found.items() if v}
    return out


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+ \S+ .*)$")


def traceback_kinds(text: str) -> dict[str, int]:
    """"<the log line that printed it> | <the exception>" -> how many, for every traceback in a
    daemon's log (the evidence behind a non-zero ``tracebacks`` count)."""
    kinds: Counter = Counter()
    lines = text.splitlines()
    last_log = ""
    for i, line in enumerate(lines):
        m = _LOG_LINE.match(line)
        if m:
            last_log = m.group(1)[:160]
        elif line.startswith("Traceback"):
            exc = next((ln for ln in lines[i + 1:] if ln and not ln.startswith((" ", "Traceback"))), "")
            kinds[f"{last_log} | {exc[:200]}"] += 1
    return dict(kinds.most_common(10))


def account(records: list[Record], effects: Counter, facts: dict,
            planned: Callable[[Record, dict], str | None], prefix: str) -> dict:
    fault = facts.get("fault")
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    reasons = {id(r): planned(r, facts) for r in failed}
    unplanned = [r for r in failed if reasons[id(r)] is None]
    tags = {r.tag for r in records}
    dupes = sorted(t for t in tags if effects.get(t, 0) > 1)
    lost = sorted(r.tag for r in ok if effects.get(r.tag, 0) == 0)
    stray = sorted(t for t in effects if t not in tags and not t.startswith("warmup-"))
    after = [r for r in records if fault is not None and r.sent >= fault]
    first_ok = min((r.done for r in after if r.ok), default=None)
    latencies = sorted((r.done - r.sent) * 1000 for r in records if r.done >= 0)
    during = sorted((r.done - r.sent) * 1000 for r in after if r.done >= 0)
    answers = Counter(_answer(r) for r in failed)
    return {
        "sent": len(records),
        "ok": len(ok),
        "failed": len(failed),
        "failed_planned": len(failed) - len(unplanned),
        "failed_unplanned": len(unplanned),
        "failures_by_answer": dict(sorted(answers.items())),
        "unplanned_by_answer": dict(sorted(Counter(_answer(r) for r in unplanned).items())),
        "planned_reasons": dict(Counter(reasons[id(r)] for r in failed if reasons[id(r)])),
        "unplanned_5xx": sum(1 for r in unplanned if 500 <= r.status < 600),
        "unanswered": sum(1 for r in records if r.done < 0),
        "accounted": len(ok) + len(failed) == len(records) and all(r.done >= 0 for r in records),
        "side_effects": sum(effects.get(t, 0) for t in tags),
        "duplicates": len(dupes),
        "duplicate_tags": dupes[:20],
        "ok_without_side_effect": len(lost),
        "ok_without_side_effect_tags": lost[:20],
        "failed_with_side_effect": sum(1 for r in failed if effects.get(r.tag, 0) >= 1),
        "failed_without_side_effect": sum(1 for r in failed if effects.get(r.tag, 0) == 0),
        "stray_side_effects": len(stray),
        "first_200_after_fault_s": None if first_ok is None else round(first_ok - fault, 3),
        "last_failure_sent_after_fault_s": (round(max(r.sent for r in failed) - fault, 3)
                                            if failed and fault is not None else None),
        "latency_ms": {"p50": _pct(latencies, 50), "p99": _pct(latencies, 99), "max": _pct(latencies, 100)},
        "latency_after_fault_ms": {"p50": _pct(during, 50), "p99": _pct(during, 99), "max": _pct(during, 100)},
        "per_second": _per_second(records),
        "failures": [r.row() + [effects.get(r.tag, 0), reasons[id(r)] is not None] for r in failed[:300]],
        "tag_prefix": prefix,
    }


def _answer(r: Record) -> str:
    return f"{r.status} {r.code}".strip()


def _pct(values: list[float], q: float) -> float | None:
    return None if not values else round(percentile(values, q), 1)


def _per_second(records: list[Record]) -> list[list[int]]:
    """[second, sent, ok, failed] per second of sending."""
    rows: dict[int, list[int]] = {}
    for r in records:
        row = rows.setdefault(int(r.sent), [int(r.sent), 0, 0, 0])
        row[1] += 1
        row[2 if r.ok else 3] += 1
    return [rows[k] for k in sorted(rows)]

"""Instructions per request, counted by valgrind's callgrind: a measure of CPU work that does
not move with the machine's load (the same code, inputs and environment give nearly the same
count), for comparing gateway settings whose CPU-time difference is smaller than what CPU time
moves by between runs on two shared cores (the observability section's end-to-end figures).

A gateway runs under ``valgrind --tool=callgrind --instr-atstart=no``: it starts and warms up
uninstrumented (valgrind's base slowdown only); then instrumentation is switched on
(``callgrind_control -i on``), N requests are sent one at a time on one keep-alive connection,
and the counts are dumped (``callgrind_control -d``).  Everything the process executes in that
window counts, every thread included (the OpenTelemetry exporter's too), and so do the
gateway's background loops (cache refresh, load reports, the metrics sampler), which run by
wall time: valgrind stretches the window, so their share is overstated, never hidden.
"""
from __future__ import annotations

import glob
import http.client
import os
import shutil
import subprocess
import time

VALGRIND = ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no", "--dump-line=no",
            "--compress-strings=no")


class Unavailable(RuntimeError):
    """valgrind (Debian's package) is not installed."""


def wrap(out_file: str) -> list[str]:
    """The command prefix that runs a process under callgrind, its counts dumped to OUT_FILE.N."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise Unavailable("valgrind is not installed (Debian package `valgrind`; scripts/setup.sh installs it)")
    return [*VALGRIND, f"--callgrind-out-file={out_file}"]


def total_instructions(dump_text: str) -> int:
    """The instructions (Ir) a callgrind dump counted: its ``totals:`` line (or ``summary:``)."""
    for line in dump_text.splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError("no totals line in the callgrind dump")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def count(pid: int, out_file: str, send, n: int) -> dict:
    """Switch instrumentation on in PID (a process started with ``wrap(out_file)``), call
    ``send()`` N times, dump: {"requests": N, "instructions": total, "per_request": total / N,
    "seconds": the window's wall time}."""
    before = set(glob.glob(out_file + "*"))
    _control("-i", "on", str(pid))
    t0 = time.monotonic()
    for _ in range(n):
        send()
    seconds = time.monotonic() - t0
    _control("-d", str(pid))
    _control("-i", "off", str(pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(glob.glob(out_file + "*")) - before, key=os.path.getmtime)
        if new:
            with open(new[-1], errors="replace") as f:
                text = f.read()
            if "totals:" in text or "summary:" in text:
                total = total_instructions(text)
                return {"requests": n, "instructions": total, "per_request": round(total / n),
                        "seconds": round(seconds, 1)}
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump for pid {pid} within 60 s")


def sender(port: int, path: str, body: bytes, headers: dict[str, str]):
    """A function that POSTs BODY to PATH on one keep-alive connection and checks for 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send() -> None:
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path} answered {resp.status}")
    return send

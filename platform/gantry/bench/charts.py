"""Charts of a ``gantry bench`` run, drawn from its results JSON with matplotlib (the ``bench``
extra) as PNG files next to BENCHMARKS.md:

- latency.png: p50 and p99 of the warm echo called directly, through nginx and through the
  gateway, at each client count (bars are medians of the rounds, whiskers their range);
- cold_start.png: where a cold start's time goes, step by step, as stacked bars: from zero,
  ``docker run`` of the same container for reference, and from a paused instance;
- throughput.png: requests per second against concurrent clients, per path.

The figures come from ``*_series`` functions (pure, tested against the JSON); ``draw`` only
plots them.  A section the run did not measure gives no chart.
"""
from __future__ import annotations

import os

PATHS = ("direct", "nginx", "gateway")
COLOURS = {"direct": "#4c72b0", "nginx": "#55a868", "gateway": "#c44e52"}
FILES = ("latency.png", "throughput.png", "cold_start.png")


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _stat(d: dict | None, key: str) -> tuple[float, float, float] | None:
    """(median, min, max) of one figure of the results, or None when it was not measured."""
    s = (d or {}).get(key) or {}
    if s.get("median") is None:
        return None
    return float(s["median"]), float(s["min"]), float(s["max"])


def latency_series(results: dict) -> dict[str, dict[str, dict[str, tuple[float, float, float]]]]:
    """{clients: {path: {"p50": (median, min, max), "p99": ...}}} in milliseconds, from the
    warm section; paths or client counts not measured are left out."""
    paths = ((results.get("sections") or {}).get("warm") or {}).get("paths") or {}
    out: dict = {}
    for path in PATHS:
        for clients, fig in (paths.get(path) or {}).items():
            p50, p99 = _stat(fig, "p50_ms"), _stat(fig, "p99_ms")
            if p50 and p99:
                out.setdefault(clients, {})[path] = {"p50": p50, "p99": p99}
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def throughput_series(results: dict) -> dict[str, list[tuple[int, float, float, float]]]:
    """{path: [(clients, median, min, max) req/s, ...]} by client count, from the warm section."""
    paths = ((results.get("sections") or {}).get("warm") or {}).get("paths") or {}
    out = {}
    for path in PATHS:
        points = [(int(c), *rps) for c, fig in (paths.get(path) or {}).items() if (rps := _stat(fig, "rps"))]
        if points:
            out[path] = sorted(points)
    return out


def cold_start_series(results: dict) -> list[tuple[str, list[tuple[str, float]]]]:
    """[(bar label, [(step, median ms), ...]), ...]: the cold start from zero step by step, the
    ``docker run`` reference as one step, and the start from a paused instance step by step.
    Steps are the medians of each step's own samples, so a bar's total is close to, not
    exactly, the median total (which the label gives)."""
    cold = (results.get("sections") or {}).get("cold_start") or {}
    bars = []

    def steps(section: dict) -> list[tuple[str, float]]:
        return [(name, max(0.0, float(s["median"]))) for name, s in (section.get("breakdown_steps_ms") or {}).items()
                if s and s.get("median") is not None]

    total = _stat(cold, "from_zero_ms")
    if total and steps(cold):
        bars.append((f"from zero ({total[0]:.0f} ms)", steps(cold)))
    ref = _stat(cold, "docker_run_reference_ms")
    if ref:
        bars.append((f"docker run ({ref[0]:.0f} ms)", [("docker run until healthy", ref[0])]))
    pool = cold.get("warm_pool") or {}
    paused = _stat(pool, "request_ms")
    if paused and steps(pool):
        bars.append((f"from paused ({paused[0]:.0f} ms)", steps(pool)))
    return bars


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ChartsUnavailable("matplotlib is missing; install the benchmark extra: pip install 'gantry[bench]'") from None
    matplotlib.use("Agg")      # files only: no screen here
    import matplotlib.pyplot as plt
    return plt


def _err(values: list[tuple[float, float, float]]) -> list[list[float]]:
    return [[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]]


def _latency(plt, series, path: str) -> None:
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4), squeeze=False)
    for ax, (clients, by_path) in zip(axes[0], series.items()):
        names = [p for p in PATHS if p in by_path]
        width = 0.38
        for i, pct in enumerate(("p50", "p99")):
            vals = [by_path[p][pct] for p in names]
            xs = [j + (i - 0.5) * width for j in range(len(names))]
            ax.bar(xs, [v[0] for v in vals], width, yerr=_err(vals), capsize=3, label=pct,
                   color=[COLOURS[p] for p in names], alpha=0.55 if pct == "p50" else 1.0)
        ax.set_xticks(range(len(names)), names)
        ax.set_yscale("log")
        ax.set_title(f"{clients} client{'s' if clients != '1' else ''}")
        ax.set_ylabel("latency, ms (log)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(["p50 (light)", "p99 (dark)"], loc="upper left")
    fig.suptitle("Warm invocation latency: median of rounds, whiskers = range")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _throughput(plt, series, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        xs = [p[0] for p in points]
        ax.errorbar(xs, [p[1] for p in points], yerr=_err([p[1:] for p in points]), marker="o", capsize=3,
                    label=name, color=COLOURS[name])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput against clients: median of rounds, whiskers = range")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cold_start(plt, bars, path: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.9 * len(bars)))
    cmap = plt.get_cmap("tab10")
    colours: dict[str, object] = {}
    for row, (label, steps) in enumerate(reversed(bars)):
        left = 0.0
        for step, ms in steps:
            colour = colours.setdefault(step, cmap(len(colours) % 10))
            ax.barh(row, ms, left=left, color=colour, edgecolor="white",
                    label=step if step not in ax.get_legend_handles_labels()[1] else None)
            if ms >= 25:
                ax.text(left + ms / 2, row, f"{ms:.0f}", ha="center", va="center", fontsize=8, color="white")
            left += ms
    ax.set_yticks(range(len(bars)), [label for label, _ in reversed(bars)])
    ax.set_xlabel("ms (medians of each step)")
    ax.set_title("Cold start, step by step")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(results: dict, out_dir: str) -> list[str]:
    """Write the charts the run has data for into OUT_DIR; the paths written.  Raises
    ChartsUnavailable without matplotlib."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, series, plot in (("latency.png", latency_series(results), _latency),
                               ("throughput.png", throughput_series(results), _throughput),
                               ("cold_start.png", cold_start_series(results), _cold_start)):
        if series:
            path = os.path.join(out_dir, name)
            plot(plt, series, path)
            written.append(path)
    return written

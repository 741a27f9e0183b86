"""PNG plots for the run report (matplotlib's Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(n_panels: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.0)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def plot_series(series: dict[str, list[tuple[float, float]]], path: str | Path, title: str) -> Path:
    """One panel per key: value over training step."""
    fig, axes = _figure(len(series))
    for ax, (key, points) in zip(axes, series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "lr" or key.endswith("_lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return Path(path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x and lower y are better), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], math.inf
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def plot_wer_vs_rtf(results: list[dict], path: str | Path) -> Path:
    """WER against RTF for every model, one panel per set; the Pareto front (faster and better) is joined."""
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("wer") is not None and r["speed"].get("rtf"):
            by_set[r["set"]].append(r)
    fig, axes = _figure(max(1, len(by_set)), ncols=2, size=(5.5, 4.0))
    for ax, (set_label, rows) in zip(axes, by_set.items()):
        points = [(r["speed"]["rtf"], 100 * r["wer"]) for r in rows]
        ax.scatter(*zip(*points), zorder=3)
        for (x, y), r in zip(points, rows):
            ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = [points[i] for i in pareto_front(points)]
        if len(front) > 1:
            ax.step(*zip(*front), where="post", color="tab:red", alpha=0.6, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel("RTF (processing time / audio time, lower is faster)")
        ax.set_ylabel("WER %")
        ax.set_title(set_label)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_wer_by_speaker(results: list[dict], path: str | Path) -> Path:
    """Grouped bars: WER per speaker (voice), one bar per model, one panel per set."""
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_set[r["set"]].append(r)
    fig, axes = _figure(max(1, len(by_set)), ncols=1, size=(9.0, 3.5))
    for ax, (set_label, rows) in zip(axes, by_set.items()):
        speakers = sorted({s for r in rows for s in r.get("by_speaker", {})})
        width = 0.8 / max(1, len(rows))
        for j, r in enumerate(rows):
            values = [100 * (r["by_speaker"].get(s, {}).get("wer") or 0.0) for s in speakers]
            ax.bar([i + j * width for i in range(len(speakers))], values, width=width, label=r["model"])
        ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(speakers))], speakers,
                      rotation=30 if len(speakers) > 6 else 0, ha="right" if len(speakers) > 6 else "center", fontsize=8)
        ax.set_ylabel("WER %")
        ax.set_title(f"{set_label}: WER per speaker")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_geometry(rows: list[dict], path: str | Path) -> Path:
    """Bars of mean geodesic distance (degrees) and linear CKA for each student (e.g. before / after)."""
    fig, (left, right) = _figure(2, ncols=2, size=(4.0, 3.0))
    names = [r["student"] for r in rows]
    left.bar(names, [r["mean_geodesic_degrees"] for r in rows], color="tab:orange")
    left.set_title("mean geodesic distance to teacher (°)")
    right.bar(names, [r["linear_cka"] for r in rows], color="tab:green")
    right.set_title("linear CKA with teacher")
    right.set_ylim(0, 1)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)
    return Path(path)

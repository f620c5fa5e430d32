"""Charts (matplotlib, headless). Imported only by the parent process, never the race child."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt

COLOURS = {"happydial": "#1b7837", "aiohappyeyeballs": "#762a83", "floor": "#888888"}


def grouped_bars(
    path: Path,
    series: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ylabel: str,
    baseline: float | None = None,
    limits: Mapping[str, float] | None = None,
) -> Path:
    """One group of bars per key of the inner mappings, one bar per series.

    *limits* draws a dashed target line over each group that has one.
    """
    groups = list(next(iter(series.values())))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [values[group] for group in groups]
        bars = ax.bar(xs, heights, width, label=name, color=COLOURS.get(name))
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    if baseline is not None:
        ax.axhline(baseline, color="black", linewidth=0.8)
    for g, group in enumerate(groups):
        if limits and group in limits:
            label = "target (happydial)" if g == 0 else "_nolegend_"
            ax.hlines(
                limits[group], g - 0.45, g + 0.45, colors="red", linestyles="dashed", label=label
            )
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines_by_size(
    path: Path,
    sizes: Sequence[int],
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str,
) -> Path:
    """One panel per metric, one line per implementation, x = number of races (log)."""
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (metric, series) in zip(flat, panels.items(), strict=False):
        for name, values in series.items():
            ax.plot(sizes, values, marker="o", label=name, color=COLOURS.get(name))
        if len(sizes) > 1:
            ax.set_xscale("log")
        ax.set_xticks(list(sizes), [f"{n:,}" for n in sizes])
        ax.set_xlabel("concurrent races")
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

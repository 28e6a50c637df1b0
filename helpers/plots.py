"""One figure style for the whole course (every lesson draws through here).

Each function takes already-measured numbers, draws one labelled figure and returns the
matplotlib ``Axes`` so a notebook can add to it. Nothing here measures or trains.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

FIGSIZE = (7.0, 4.2)
COLORS = {"cloud": "#1f77b4", "edge": "#2ca02c", "baseline": "#444444", "accent": "#d62728"}


def new_axes(title: str, xlabel: str, ylabel: str, figsize=FIGSIZE, ax=None):
    """A fresh, labelled Axes in the course style (or ``ax`` relabelled)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return ax


def model_growth(table: pd.DataFrame, highlight: str | None = "LeNet-5"):
    """Parameters vs year on a log scale, cloud and edge models in two colours."""
    ax = new_axes("Published model sizes by year", "year", "parameters (log scale)")
    for kind, rows in table.groupby("kind"):
        ax.scatter(rows["year"], rows["params"], s=40, color=COLORS.get(kind), label=kind,
                   zorder=3)
        for _, row in rows.iterrows():
            ax.annotate(row["model"], (row["year"], row["params"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points",
                        weight="bold" if row["model"] == highlight else "normal")
    ax.set_yscale("log")
    ax.legend(title="designed for")
    return ax


def budget_bars(boards: pd.DataFrame, used_kb: dict[str, float], column: str = "flash_kb",
                title: str = "Does the model fit?"):
    """Horizontal bars of each board's budget (log scale) with vertical lines for models."""
    ax = new_axes(title, f"{column.replace('_kb', '')} (KB, log scale)", "")
    ax.barh(boards["board"], boards[column], color="#bbbbbb", label=column.replace("_kb", ""))
    for (label, kb), color in zip(used_kb.items(), plt.cm.tab10.colors):
        ax.axvline(kb, color=color, linestyle="--", label=f"{label}: {kb:,.1f} KB")
    ax.set_xscale("log")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def weight_histogram(weights: np.ndarray | Sequence[np.ndarray], labels: Sequence[str] = (),
                     title: str = "Weight distribution", bins: int = 101, ax=None,
                     log: bool = True):
    """Histogram(s) of weight values (log counts by default, so zeros and tails both show)."""
    ax = new_axes(title, "weight value", "count (log scale)" if log else "count", ax=ax)
    arrays = [weights] if isinstance(weights, np.ndarray) else list(weights)
    labels = list(labels) or [None] * len(arrays)
    edges = np.histogram_bin_edges(np.concatenate([np.ravel(a) for a in arrays]), bins=bins)
    for array, label in zip(arrays, labels):
        ax.hist(np.ravel(array), bins=edges, alpha=0.6, label=label, log=log)
    if any(labels):
        ax.legend()
    return ax


def tradeoff(table: pd.DataFrame, x: str, y: str, title: str = "Trade-off",
             label_points: bool = True, logx: bool = False, pareto: bool = False, ax=None):
    """Scatter one measured column against another; optionally mark the Pareto front.

    The Pareto front is the set of rows no other row beats on both axes, taking smaller
    ``x`` (e.g. bytes) and larger ``y`` (e.g. accuracy) as better.
    """
    ax = new_axes(title, x, y, ax=ax)
    ax.scatter(table[x], table[y], s=40, color=COLORS["cloud"], zorder=3)
    if label_points:
        for name, row in table.iterrows():
            ax.annotate(str(name), (row[x], row[y]), fontsize=8, xytext=(4, 3),
                        textcoords="offset points")
    if pareto:
        front = pareto_front(table, x, y)
        ax.plot(front[x], front[y], color=COLORS["accent"], marker="o", linestyle="-",
                label="Pareto front", zorder=4)
        ax.legend()
    if logx:
        ax.set_xscale("log")
    return ax


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by any other row (smaller ``x`` and larger ``y`` are better)."""
    ordered = table.sort_values([x, y], ascending=[True, False])
    best, keep = -np.inf, []
    for name, row in ordered.iterrows():
        if row[y] > best:
            keep.append(name)
            best = row[y]
    return ordered.loc[keep]


def binned_histogram(edges: np.ndarray, counts: dict[str, np.ndarray],
                     title: str = "Weight distribution", ax=None, log: bool = True):
    """Histograms counted beforehand (e.g. in a sweep), drawn as filled steps on shared bins."""
    ax = new_axes(title, "weight value", "count (log scale)" if log else "count", ax=ax)
    for (label, values), color in zip(counts.items(), plt.cm.tab10.colors):
        ax.stairs(values, edges, fill=True, alpha=0.5, color=color, label=label)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
    ax.legend(fontsize=8)
    return ax


def accuracy_vs_sparsity(sparsity_pct: Sequence[float], curves: dict[str, Sequence[float]],
                         baseline: float | None = None, mark: float | None = None,
                         title: str = "Accuracy vs sparsity", ax=None):
    """Accuracy (%) against sparsity (%), one line per recipe; baseline dashed; ``mark`` a line."""
    ax = new_axes(title, "sparsity (% of kernel weights set to 0)", "test accuracy (%)", ax=ax)
    for label, values in curves.items():
        ax.plot(sparsity_pct, values, marker="o", label=label)
    if baseline is not None:
        ax.axhline(baseline, color=COLORS["baseline"], linestyle="--",
                   label=f"unpruned: {baseline:.1f} %")
    if mark is not None:
        ax.axvline(mark, color=COLORS["accent"], alpha=0.6)
    ax.legend(fontsize=8)
    return ax


def quantization_grid(weights: np.ndarray, quantized: np.ndarray,
                      grids: dict[str, np.ndarray] | None = None, bins: int = 161,
                      title: str = "Weights on the quantization grid", ax=None):
    """Histogram of weights and of their quantized values, with the grid levels as lines.

    ``grids`` maps a label to the levels (real values) to draw; a grid with more than 64
    levels is too fine to see and is left out. Used by ``02_quantization``'s bit-width
    explorer.
    """
    ax = new_axes(title, "weight value", "count (log scale)", ax=ax)
    edges = np.histogram_bin_edges(np.ravel(weights), bins=bins)
    ax.stairs(np.histogram(weights, edges)[0], edges, fill=True, color="#bbbbbb",
              label="float32")
    ax.stairs(np.histogram(quantized, edges)[0], edges, linewidth=1.4, color=COLORS["cloud"],
              label="quantized")
    colors = [COLORS["accent"], COLORS["edge"]]
    for (label, levels), color in zip((grids or {}).items(), colors):
        if len(levels) <= 64:
            ax.vlines(levels, 0, 1, transform=ax.get_xaxis_transform(), color=color,
                      alpha=0.5, linewidth=0.8, label=label)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.legend(fontsize=8, loc="upper right")
    return ax


def accuracy_vs_bits(bits: Sequence[int], curves: dict[str, Sequence[float]],
                     baseline: float | None = None, mark: int | None = None,
                     title: str = "Accuracy vs weight bit-width", ax=None):
    """Accuracy (%) against bits per weight, one line per scheme; float baseline dashed."""
    ax = new_axes(title, "bits per weight", "test accuracy (%)", ax=ax)
    for label, values in curves.items():
        ax.plot(bits, values, marker="o", markersize=4, label=label)
    if baseline is not None:
        ax.axhline(baseline, color=COLORS["baseline"], linestyle="--",
                   label=f"float32: {baseline:.1f} %")
    if mark is not None:
        ax.axvline(mark, color=COLORS["accent"], alpha=0.6)
    ax.set_xticks(list(bits))
    ax.legend(fontsize=8, loc="lower right")
    return ax

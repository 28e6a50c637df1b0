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

"""One figure style for the whole course (every lesson draws through here).

Each function takes already-measured numbers, draws one labelled figure and returns the
matplotlib ``Axes`` so a notebook can add to it. Nothing here measures or trains.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["FIGSIZE", "COLORS", "new_axes", "model_growth", "budget_bars", "weight_histogram",
           "tradeoff", "pareto_front", "binned_histogram", "accuracy_vs_sparsity",
           "quantization_axes", "quantization_overlay", "quantization_grid", "accuracy_vs_bits",
           "soft_targets", "label_scarce", "size_ratios", "energy_curves",
           "energy_vs_accuracy"]

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
             label_points: bool | str = True, logx: bool = False, pareto: bool = False, ax=None):
    """Scatter one measured column against another; optionally mark the Pareto front.

    The Pareto front is the set of rows no other row beats on both axes, taking smaller
    ``x`` (e.g. bytes) and larger ``y`` (e.g. accuracy) as better. ``label_points="front"``
    names only the rows on the front (many close points make labels unreadable).
    """
    ax = new_axes(title, x, y, ax=ax)
    ax.scatter(table[x], table[y], s=40, color=COLORS["cloud"], zorder=3)
    front = pareto_front(table, x, y)
    if label_points:
        labelled = front if label_points == "front" else table
        for name, row in labelled.iterrows():
            ax.annotate(str(name), (row[x], row[y]), fontsize=8, xytext=(4, -10),
                        textcoords="offset points")
    if pareto:
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


def _accuracy_curves(x: Sequence[float], curves: dict[str, Sequence[float]], xlabel: str,
                     baseline: float | None, baseline_label: str, mark: float | None,
                     title: str, ax, **line):
    """Accuracy (%) curves against ``x``; the reference model dashed; ``mark`` a vertical line."""
    ax = new_axes(title, xlabel, "test accuracy (%)", ax=ax)
    for label, values in curves.items():
        ax.plot(x, values, marker="o", label=label, **line)
    if baseline is not None:
        ax.axhline(baseline, color=COLORS["baseline"], linestyle="--",
                   label=f"{baseline_label}: {baseline:.1f} %")
    if mark is not None:
        ax.axvline(mark, color=COLORS["accent"], alpha=0.6)
    return ax


def accuracy_vs_sparsity(sparsity_pct: Sequence[float], curves: dict[str, Sequence[float]],
                         baseline: float | None = None, mark: float | None = None,
                         title: str = "Accuracy vs sparsity", ax=None):
    """Accuracy (%) against sparsity (%), one line per recipe; baseline dashed; ``mark`` a line."""
    ax = _accuracy_curves(sparsity_pct, curves, "sparsity (% of kernel weights set to 0)",
                          baseline, "unpruned", mark, title, ax)
    ax.legend(fontsize=8)
    return ax


def quantization_axes(weights: np.ndarray, bins: int = 161,
                      grid_labels: Sequence[str] = ("grid",),
                      title: str = "Weights on the quantization grid", ax=None):
    """The static part of :func:`quantization_grid`: float32 histogram, fixed limits, legend.

    Counts are on a log axis from 0.8 to the number of weights, so that a quantized level
    holding most weights still fits. :func:`quantization_overlay` adds the rest.
    """
    ax = new_axes(title, "weight value", "count (log scale)", ax=ax)
    edges = np.histogram_bin_edges(np.ravel(weights), bins=bins)
    ax.stairs(np.histogram(weights, edges)[0], edges, fill=True, color="#bbbbbb",
              label="float32")
    ax.set_yscale("log")
    ax.set_ylim(0.8, 2 * np.size(weights))
    ax.set_xlim(edges[0], edges[-1])
    handles = [plt.Line2D([], [], color=COLORS["cloud"], linewidth=1.4, label="quantized")]
    handles += [plt.Line2D([], [], color=color, alpha=0.6, label=label)
                for label, color in zip(grid_labels, (COLORS["accent"], COLORS["edge"]))]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=8,
              loc="upper right")
    return ax


def quantization_overlay(ax, weights: np.ndarray, quantized: np.ndarray,
                         grids: dict[str, np.ndarray] | None = None, bins: int = 161) -> list:
    """Add the quantized histogram and the grid levels to an axes from :func:`quantization_axes`.

    A grid with more than 64 levels is too fine to see and is left out. Returns the artists
    added (the bit-width explorer blits them onto a saved background).
    """
    edges = np.histogram_bin_edges(np.ravel(weights), bins=bins)
    artists = [ax.stairs(np.histogram(quantized, edges)[0], edges, linewidth=1.4,
                         color=COLORS["cloud"])]
    for levels, color in zip((grids or {}).values(), (COLORS["accent"], COLORS["edge"])):
        if len(levels) <= 64:
            artists.append(ax.vlines(levels, 0, 1, transform=ax.get_xaxis_transform(),
                                     color=color, alpha=0.6, linewidth=0.8))
    return artists


def quantization_grid(weights: np.ndarray, quantized: np.ndarray,
                      grids: dict[str, np.ndarray] | None = None, bins: int = 161,
                      title: str = "Weights on the quantization grid", ax=None):
    """Histogram of weights and of their quantized values, with the grid levels as lines.

    ``grids`` maps a label to the levels (real values) to draw. Used by ``02_quantization``.
    """
    ax = quantization_axes(weights, bins, tuple(grids or ()), title, ax)
    quantization_overlay(ax, weights, quantized, grids, bins)
    return ax


def accuracy_vs_bits(bits: Sequence[int], curves: dict[str, Sequence[float]],
                     baseline: float | None = None, mark: int | None = None,
                     title: str = "Accuracy vs weight bit-width", ax=None):
    """Accuracy (%) against bits per weight, one line per scheme; float baseline dashed."""
    ax = _accuracy_curves(bits, curves, "bits per weight", baseline, "float32", mark, title, ax,
                          markersize=4)
    ax.set_xticks(list(bits))
    ax.legend(fontsize=8, loc="lower right")
    return ax


def soft_targets(probabilities: Sequence[float], class_names: Sequence[str],
                 temperature: float | None = None, true_class: int | None = None,
                 title: str | None = None, ax=None):
    """One predicted distribution as bars (``03_distillation``: a teacher's soft targets).

    The true class is drawn in the accent colour; the y axis is fixed to [0, 1] so that
    distributions at different temperatures compare at a glance.
    """
    if title is None:
        title = "Teacher's soft targets" + (f" at T = {temperature:g}" if temperature else "")
    ax = new_axes(title, "class", "probability", ax=ax)
    colors = [COLORS["accent"] if i == true_class else COLORS["cloud"]
              for i in range(len(class_names))]
    ax.bar(range(len(class_names)), probabilities, color=colors)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_ylim(0, 1)
    return ax


def label_scarce(summary: pd.DataFrame,
                 title: str = "A student short of labels: alone vs taught", ax=None):
    """Test accuracy against the number of labels: scratch and distilled (mean ± std over
    seeds), the teacher dashed (``03_distillation``; ``summary`` from
    ``helpers.distillation.summarize``)."""
    ax = new_axes(title, "labelled training images (log scale)", "test accuracy (%)", ax=ax)
    for method, color in (("scratch", COLORS["baseline"]), ("distilled", COLORS["edge"])):
        ax.errorbar(summary.index.to_numpy(float), summary[f"{method} %"].to_numpy(float),
                    yerr=summary[f"{method} std"].to_numpy(float),
                    fmt="o-", capsize=4, color=color, label=f"{method} (mean ± std)")
    teacher = float(summary["teacher %"].iloc[0])
    ax.axhline(teacher, color=COLORS["accent"], linestyle="--", label=f"teacher: {teacher:.1f} %")
    ax.set_xscale("log")
    ax.set_xticks(list(summary.index), [f"{n:,}" for n in summary.index])
    ax.legend(fontsize=8, loc="lower right")
    return ax


def size_ratios(ratios: pd.Series, ideal: float = 4.0,
                title: str = "How much smaller is the int8 file?"):
    """Horizontal bars of float32 / int8 file-size ratios, with the weights-only ideal dashed."""
    ax = new_axes(title, "float32 TFLite bytes / int8 TFLite bytes", "")
    labels = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in ratios.index]
    bars = ax.barh(labels, ratios.to_numpy(), color=COLORS["edge"])
    ax.bar_label(bars, fmt="%.2fx", padding=-40, color="white", fontsize=9, weight="bold")
    ax.axvline(ideal, color=COLORS["baseline"], linestyle="--",
               label=f"{ideal:g}x: 4-byte weights become 1-byte codes")
    ax.set_xlim(0, ideal * 1.1)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return ax


def energy_curves(spectra: dict[str, np.ndarray], threshold: float | None = None):
    """Two panels: each layer's singular values (normalized) and the energy its top ranks keep.

    Args:
        spectra: ``{layer: singular values}``, e.g. from ``helpers.lowrank.singular_values``.
        threshold: An energy fraction to mark (e.g. 0.9).
    """
    _, (left, right) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.6, FIGSIZE[1]),
                                    layout="constrained")
    new_axes("Singular values", "index i (largest first)", "s_i / s_1 (log scale)", ax=left)
    new_axes("Energy kept by the top r", "rank r / full rank", "sum of s_i^2 kept", ax=right)
    for name, s in spectra.items():
        s = np.sort(np.asarray(s, dtype=np.float64))[::-1]
        left.semilogy(np.arange(1, s.size + 1), s / s[0], label=name)
        right.plot(np.arange(1, s.size + 1) / s.size, np.cumsum(s ** 2) / np.sum(s ** 2),
                   label=name)
    if threshold is not None:
        right.axhline(threshold, color=COLORS["baseline"], linestyle="--",
                      label=f"{threshold:.0%} energy")
    right.legend()
    return left, right


def energy_vs_accuracy(study: pd.DataFrame, baseline: float | None = None, ax=None):
    """Test accuracy against the energy kept, one line per layer factorized alone.

    Args:
        study: A table from ``helpers.lowrank.energy_study``.
        baseline: The unfactorized model's accuracy (a fraction), drawn as a dashed line.
    """
    ax = new_axes("Same energy, different cost", "energy kept (each layer alone)",
                  "test accuracy %", ax=ax)
    for name, rows in study.groupby("layer", sort=False):
        ax.plot(rows.energy, 100 * rows.accuracy, marker="o", label=name)
    if baseline is not None:
        ax.axhline(100 * baseline, color=COLORS["baseline"], linestyle="--",
                   label="not factorized")
    ax.legend()
    return ax

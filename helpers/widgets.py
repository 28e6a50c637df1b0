"""Interactive explorers: move a slider, see a measured trade-off (``01_pruning`` and later).

An explorer never trains or measures when the slider moves. The notebook measures a sweep
first (e.g. ``helpers.pruning.sparsity_sweep``); the explorer then *looks up* the answer
for the slider's value in that table and draws it, so each move answers in milliseconds.

* :func:`sweep_explorer` is the generic building block: a table (a ``DataFrame`` indexed by
  the slider values, or a dict), the slider values, and a ``draw_fn(value, row, figure)``
  that draws one row on a matplotlib figure and returns the text to show beside it.
* :func:`sparsity_explorer` is the pruning lesson's explorer (sparsity -> accuracy with
  and without fine-tuning, file bytes, gzip bytes, weight histogram).

The returned :class:`Explorer` is testable without a browser: set ``explorer.slider.value``
and read ``explorer.labels.value`` (HTML), ``explorer.image.value`` (PNG bytes),
``explorer.figure`` (the matplotlib figure) and ``explorer.last_update_ms``. Frames are
rendered once per value and reused. Where widgets cannot render, the cell's text output
shows the current labels.
"""
from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from helpers import _validate, distillation, plots, pruning, quantization

__all__ = ["EXPLORER_FIGSIZE", "EXPLORER_DPI", "Explorer", "sweep_explorer", "sparsity_explorer",
           "temperature_explorer", "BITWIDTH_FIGSIZE", "BitwidthExplorer", "bitwidth_explorer"]

EXPLORER_FIGSIZE = (10.0, 3.6)
EXPLORER_DPI = 80


class Explorer(widgets.VBox):
    """A slider, a line of labels and a figure; answers each move from a precomputed table.

    Attributes:
        slider: The ``SelectionSlider``; set ``slider.value`` to move it.
        labels: ``HTML`` widget with the numbers for the current value.
        image: ``Image`` widget with the current frame (PNG bytes in ``image.value``).
        figure: The matplotlib ``Figure`` the frames are drawn on.
        last_update_ms: How long the last slider move took to answer, in milliseconds.
    """

    def __init__(self, table, values: list, draw_fn: Callable[[Any, Any, Figure], str],
                 setup_fn: Callable[[Figure], None] | None, description: str,
                 format_value: Callable[[Any], str], figsize, dpi: int):
        self._table, self._draw_fn, self._format = table, draw_fn, format_value
        self._frames: dict[Any, tuple[bytes, str]] = {}
        self.figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        FigureCanvasAgg(self.figure)
        self._background = None
        if setup_fn is not None:  # draw the static part once; frames only add to it
            setup_fn(self.figure)
            self.figure.canvas.draw()
            self.figure.set_layout_engine("none")
            for ax in self.figure.axes:
                ax.set_autoscale_on(False)
            self._background = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        self.slider = widgets.SelectionSlider(
            options=[(format_value(v), v) for v in values], value=values[0],
            description=description, continuous_update=True,
            style={"description_width": "initial"}, layout=widgets.Layout(width="60%"))
        self.labels = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.last_update_ms = 0.0
        super().__init__([self.slider, self.labels, self.image])
        self.slider.observe(lambda change: self._show(change["new"]), names="value")
        self._show(values[0])

    def _row(self, value):
        if isinstance(self._table, pd.DataFrame):
            return self._table.loc[value]
        return self._table[value]

    def _artists(self) -> set[int]:
        return {id(a) for owner in [self.figure, *self.figure.axes]
                for a in owner.get_children()}

    def _render(self, value) -> tuple[bytes, str]:
        figure, canvas = self.figure, self.figure.canvas
        if self._background is None:  # no static part: redraw everything
            figure.clear()
            text = self._draw_fn(value, self._row(value), figure)
            canvas.draw()
        else:  # blit: restore the static pixels, draw only what draw_fn added
            before = self._artists()
            text = self._draw_fn(value, self._row(value), figure)
            added = [a for owner in [figure, *figure.axes] for a in owner.get_children()
                     if id(a) not in before]
            canvas.restore_region(self._background)
            for artist in added:
                (artist.axes or figure).draw_artist(artist)
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buffer, format="png",
                                                               compress_level=1)
        if self._background is not None:
            for artist in added:
                artist.remove()
        return buffer.getvalue(), text or ""

    def _show(self, value) -> None:
        start = time.perf_counter()
        if value not in self._frames:
            self._frames[value] = self._render(value)
        self.image.value, self.labels.value = self._frames[value]
        self.last_update_ms = (time.perf_counter() - start) * 1000.0

    def prerender(self) -> "Explorer":
        """Render every frame now, so that every later move is a dictionary look-up."""
        for _, value in self.slider.options:
            if value not in self._frames:
                self._frames[value] = self._render(value)
        return self

    @property
    def text(self) -> str:
        """The current labels as plain text."""
        plain = re.sub(r"<br\s*/?>|</tr>|</p>", "\n", self.labels.value)
        plain = re.sub(r"</t[dh]>", "  ", plain)
        return html.unescape(re.sub(r"<[^>]+>", "", plain)).strip()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        value = self._format(self.slider.value)
        bundle["text/plain"] = f"{self.slider.description} = {value}\n{self.text}"
        return bundle


def sweep_explorer(sweep_table: pd.DataFrame | Mapping, slider_values: Sequence,
                   draw_fn: Callable[[Any, Any, Figure], str],
                   setup_fn: Callable[[Figure], None] | None = None,
                   description: str = "value", format_value: Callable[[Any], str] = str,
                   figsize=EXPLORER_FIGSIZE, dpi: int = EXPLORER_DPI,
                   prerender: bool = False) -> Explorer:
    """A slider over ``slider_values`` that shows, for each, a row of a precomputed table.

    Two ways to draw. Without ``setup_fn``, ``draw_fn`` redraws the whole (cleared) figure
    for each value: simplest, but a matplotlib redraw can take 0.1-0.5 s, so pass
    ``prerender=True``. With ``setup_fn``, the static part (axes, reference curves,
    legends, fixed limits) is drawn once and ``draw_fn`` only *adds* artists to
    ``figure.axes`` (a line, a histogram); the explorer blits them onto the saved
    background, which takes milliseconds. Each frame is rendered once and reused.

    Args:
        sweep_table: Measured results: a ``DataFrame`` indexed by the slider values, or a
            dict ``{value: row}``.
        slider_values: The values the slider can take, in order; each must be in the table.
        draw_fn: ``draw_fn(value, row, figure)`` draws one row and returns the HTML shown
            above the figure (labelled numbers with units).
        setup_fn: ``setup_fn(figure)`` draws what every frame shares (optional, see above).
        description: Slider label.
        format_value: How a value is shown on the slider (e.g. ``lambda s: f"{s:.0%}"``).
        figsize: Figure size in inches.
        dpi: Resolution of the frames.
        prerender: Render all frames now, so every move is a look-up.

    Returns:
        An :class:`Explorer` widget.

    Raises:
        ValueError: no slider values, a value with no row in the table, or ``draw_fn`` is
            not callable.
    """
    values = list(slider_values)
    if not values:
        raise ValueError("slider_values must hold at least one value, got an empty sequence")
    keys = list(sweep_table.index if isinstance(sweep_table, pd.DataFrame) else sweep_table)
    missing = [v for v in values if v not in keys]
    if missing:
        raise ValueError(f"slider value {missing[0]!r} has no row in sweep_table "
                         f"(its keys: {keys})")
    for name, function in (("draw_fn", draw_fn), ("setup_fn", setup_fn)):
        if function is not None and not callable(function):
            raise ValueError(f"{name} must be callable, got {type(function).__name__}")
    if draw_fn is None:
        raise ValueError("draw_fn must be callable, got None")
    explorer = Explorer(sweep_table, values, draw_fn, setup_fn, description, format_value,
                        figsize, dpi)
    return explorer.prerender() if prerender else explorer


# ---------------------------------------------------------------------------- pruning
def _kb(n: float) -> str:
    return f"{n / 1024:,.1f} KB"


def sparsity_explorer(sweep, prerender: bool = False) -> Explorer:
    """Explore a pruning sweep: sparsity slider -> accuracy, bytes, gzip bytes, histogram.

    Args:
        sweep: A ``helpers.pruning.SparsitySweep`` (from ``pruning.sparsity_sweep``): its
            ``table`` (indexed by sparsity, first row the least pruned), histogram
            ``edges``, ``dense_counts``, ``counts`` (one per row) and ``baseline_accuracy``.
        prerender: Render all frames at once (see :func:`sweep_explorer`).

    Returns:
        An :class:`Explorer`. Its labels show the sparsity, the accuracy one-shot and after
        fine-tuning (with the drop from the baseline), the TFLite file size and its gzip
        size (with the ratio to the least-pruned row's gzip). Its figure shows the
        surviving weights against the original ones, and where the slider is on the
        accuracy-vs-sparsity curves.
    """
    table = sweep.table
    if len(table) != len(sweep.counts):
        raise ValueError(f"sweep has {len(table)} rows but {len(sweep.counts)} histograms")
    counts = dict(zip(table.index, sweep.counts))
    first = table.iloc[0]
    base = 100 * sweep.baseline_accuracy
    pruned_color = plots.plt.cm.tab10.colors[1]

    def setup(figure):
        left, right = figure.subplots(1, 2)
        plots.binned_histogram(sweep.edges, {"original": sweep.dense_counts,
                                             "pruned + fine-tuned": 0 * sweep.dense_counts},
                               title="Non-zero kernel weights", ax=left)
        left.set_ylim(0.8, 2 * max(sweep.dense_counts.max(), np.max(sweep.counts)))
        plots.accuracy_vs_sparsity(100 * table.index, {
            "one-shot (no training)": 100 * table[pruning.ACCURACY_ONE_SHOT],
            "fine-tuned": 100 * table[pruning.ACCURACY_FINE_TUNED]}, baseline=base, ax=right)

    def draw(value, row, figure):
        left, right = figure.axes
        left.stairs(counts[value], sweep.edges, fill=True, alpha=0.5, color=pruned_color)
        right.axvline(100 * value, color=plots.COLORS["accent"], alpha=0.6)
        one_shot = 100 * row[pruning.ACCURACY_ONE_SHOT]
        tuned = 100 * row[pruning.ACCURACY_FINE_TUNED]
        gzip = row[pruning.TFLITE_GZIP_BYTES]
        ratio = "" if value == table.index[0] else (
            f" ({first[pruning.TFLITE_GZIP_BYTES] / gzip:.2f}x smaller than at "
            f"{table.index[0]:.0%})")
        return (f"<b>sparsity {100 * row[pruning.SPARSITY_MEASURED]:.1f} %</b> &nbsp;|&nbsp; "
                f"accuracy one-shot <b>{one_shot:.1f} %</b>, fine-tuned <b>{tuned:.1f} %</b> "
                f"(baseline {base:.1f} %, drop {base - tuned:.1f} points) &nbsp;|&nbsp; "
                f"TFLite file <b>{_kb(row[pruning.TFLITE_BYTES])}</b>, gzip "
                f"<b>{_kb(gzip)}</b>{ratio}")

    return sweep_explorer(table, list(table.index), draw, setup, description="sparsity",
                          format_value=lambda s: f"{s:.0%}", prerender=prerender)


# ---------------------------------------------------------------------------- distillation
def temperature_explorer(table: pd.DataFrame, true_class: int | None = None,
                         image: np.ndarray | None = None, prerender: bool = False) -> Explorer:
    """Explore soft targets: temperature slider -> one example's teacher distribution.

    Args:
        table: From ``helpers.distillation.temperature_table``: indexed by temperature, one
            probability column per class, then ``entropy bits``.
        true_class: Position of the true class among the columns (drawn in the accent colour).
        image: The example's image (``H x W`` or ``H x W x 1``), drawn beside the bars.
        prerender: Render all frames at once (see :func:`sweep_explorer`).

    Returns:
        An :class:`Explorer` (used by ``03_distillation``). Its labels show the temperature,
        the three most likely classes with their probabilities and the entropy in bits; its
        figure shows the distribution as bars on a fixed [0, 1] axis.

    Raises:
        ValueError: the table has no ``entropy bits`` column or ``true_class`` is not a
            class position.
    """
    if distillation.ENTROPY_BITS not in table.columns:
        raise ValueError(f"table must come from distillation.temperature_table (it has no "
                         f"{distillation.ENTROPY_BITS!r} column)")
    classes = [c for c in table.columns if c != distillation.ENTROPY_BITS]
    if true_class is not None:
        _validate.integer(true_class, "true_class", 0, len(classes) - 1)
    flat = np.log2(len(classes))

    def setup(figure):
        if image is not None:
            picture, bars = figure.subplots(1, 2, width_ratios=[1, 3])
            picture.imshow(np.squeeze(image), cmap="gray_r")
            picture.set_title("the example")
            picture.axis("off")
        else:
            bars = figure.subplots()
        plots.soft_targets(np.zeros(len(classes)), classes, true_class=true_class, ax=bars)

    def draw(value, row, figure):
        probabilities = row[classes].to_numpy(dtype=float)
        colors = [plots.COLORS["accent"] if i == true_class else plots.COLORS["cloud"]
                  for i in range(len(classes))]
        figure.axes[-1].bar(range(len(classes)), probabilities, color=colors)
        top = np.argsort(probabilities)[::-1][:3]
        best = ", ".join(f"{classes[i]}: {100 * probabilities[i]:.1f} %" for i in top)
        return (f"<b>T = {value:g}</b> &nbsp;|&nbsp; most likely {best} &nbsp;|&nbsp; "
                f"entropy <b>{row['entropy bits']:.2f} bits</b> (0 = certain, "
                f"{flat:.2f} = uniform)")

    return sweep_explorer(table, list(table.index), draw, setup, description="temperature T",
                          format_value=lambda t: f"{t:g}", prerender=prerender)


# ---------------------------------------------------------------------------- quantization
BITWIDTH_FIGSIZE = (7.5, 3.2)


class BitwidthExplorer(widgets.VBox):
    """A bit-width slider and a per-tensor / per-channel toggle over a quantization sweep.

    One :class:`Explorer` per granularity; the toggle shows one and moves its slider to the
    bit-width on show, so only the visible explorer ever draws.

    Attributes:
        toggle: ``ToggleButtons`` choosing the granularity; set ``toggle.value`` to switch.
        explorers: ``{granularity: Explorer}``.
    """

    def __init__(self, toggle, explorers: dict[str, Explorer]):
        self.toggle, self.explorers = toggle, explorers
        super().__init__([toggle, explorers[toggle.value]])
        toggle.observe(lambda change: self._switch(change["new"]), names="value")

    def _switch(self, granularity: str) -> None:
        bits = self.children[1].slider.value
        shown = self.explorers[granularity]
        shown.slider.value = bits
        self.children = [self.toggle, shown]

    @property
    def current(self) -> Explorer:
        """The explorer on show."""
        return self.explorers[self.toggle.value]

    @property
    def slider(self):
        """The bit-width slider on show."""
        return self.current.slider

    @property
    def text(self) -> str:
        return self.current.text

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = (f"{self.toggle.value}, {self.slider.value} bits\n"
                                f"{self.current.text}")
        return bundle


def bitwidth_explorer(sweep: pd.DataFrame, kernel: np.ndarray, layer: str = "layer",
                      prerender: bool = False) -> BitwidthExplorer:
    """Explore a bit-width sweep: bits slider and granularity toggle -> grid, error, accuracy.

    Args:
        sweep: A table from ``helpers.quantization.bitwidth_sweep`` (columns ``bits``,
            ``granularity``, ``levels``, ``mse``, ``sqnr_db``, ``accuracy``; the float
            accuracy in ``sweep.attrs["float_accuracy"]``).
        kernel: One Keras kernel to draw (output channels on the last axis), e.g. the
            largest layer's; it is fake-quantized for the picture, the numbers come from
            the sweep.
        layer: Its name, for the figure title.
        prerender: Render every frame now. By default each frame is drawn on its first
            visit (milliseconds: only the quantized histogram and the grid are drawn over
            a saved background) and reused after that.

    Returns:
        A :class:`BitwidthExplorer`: the kernel's histogram before and after quantization
        with the grid levels (per-channel: the finest and the coarsest channel's grids), and
        the sweep's numbers for that bit-width and granularity.
    """
    required = {quantization.BITS, quantization.GRANULARITY, quantization.LEVELS,
                quantization.MSE, quantization.SQNR_DB, quantization.ACCURACY}
    if not isinstance(sweep, pd.DataFrame) or not required <= set(sweep.columns):
        raise ValueError(f"sweep must be a DataFrame from quantization.bitwidth_sweep with "
                         f"columns {sorted(required)}, got {type(sweep).__name__}")
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim < 2:
        raise ValueError(f"kernel must have >= 2 dimensions (a Conv2D or Dense kernel), got "
                         f"shape {kernel.shape}")
    table = sweep.set_index([quantization.GRANULARITY, quantization.BITS]).sort_index()
    granularities = [g for g in quantization.GRANULARITIES if g in table.index.levels[0]]
    bits = sorted(int(b) for b in sweep[quantization.BITS].unique())

    def setup_for(granularity: str):
        labels = ("grid",) if granularity == "per-tensor" else (
            "grid, finest channel", "grid, coarsest channel")

        def setup(figure):
            plots.quantization_axes(kernel, grid_labels=labels, ax=figure.subplots(),
                                    title=f"{layer} kernel, {granularity} scales")
        return setup

    def draw_for(granularity: str):
        axis = -1 if granularity == "per-channel" else None

        def draw(b, row, figure):
            scale, _ = quantization.quantization_params(kernel, b, symmetric=True, axis=axis)
            codes = np.arange(-(2 ** (b - 1) - 1), 2 ** (b - 1))
            grids = ({"grid": codes * scale} if axis is None else
                     {"grid, finest channel": codes * np.min(scale),
                      "grid, coarsest channel": codes * np.max(scale)})
            plots.quantization_overlay(figure.axes[0], kernel,
                                       quantization.fake_quantize(kernel, b, True, axis), grids)
            steps = (f"{scale:.2e}" if axis is None else
                     f"{np.min(scale):.2e} to {np.max(scale):.2e}")
            drop = (f" (drop {row[quantization.ACCURACY_DROP]:+.1f} points)"
                    if quantization.ACCURACY_DROP in row.index else "")
            return (f"<b>{b} bits, {granularity}</b>: {int(row[quantization.LEVELS])} levels, "
                    f"{layer} step {steps} "
                    f"&nbsp;|&nbsp; all weights: MSE <b>{row[quantization.MSE]:.2e}</b>, SQNR "
                    f"<b>{row[quantization.SQNR_DB]:.1f} dB</b> &nbsp;|&nbsp; test accuracy "
                    f"<b>{100 * row[quantization.ACCURACY]:.1f} %</b>{drop} &nbsp;|&nbsp; "
                    f"weight bytes <b>{b / 32:.0%}</b> of float32")
        return draw

    explorers = {g: sweep_explorer(table.loc[g], bits, draw_for(g), setup_for(g),
                                   description="weight bits", figsize=BITWIDTH_FIGSIZE,
                                   prerender=prerender)
                 for g in granularities}
    toggle = widgets.ToggleButtons(options=granularities, value=granularities[0],
                                   description="scales")
    return BitwidthExplorer(toggle, explorers)

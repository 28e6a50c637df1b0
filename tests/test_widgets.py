"""helpers.widgets: explorers answer slider moves from a precomputed table, headlessly.

No wall-clock asserts here (they fail on a slow or shared machine): the tests check the
mechanism that makes a move fast (a frame is rendered at most once per value, a revisit is a
look-up, the static figure is blitted), and ``python -m helpers.course.benchmark --timings``
measures the response times against their targets (0.2 s for a first visit, 50 ms after).
"""
import numpy as np
import pandas as pd
import pytest

from helpers import widgets
from helpers.pruning import SparsitySweep

SPARSITIES = [0.0, 0.5, 0.8, 0.9, 0.95]


@pytest.fixture(scope="module")
def sweep():
    """A made-up sweep with the shape of pruning.sparsity_sweep's result."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "sparsity": SPARSITIES,
        "accuracy one-shot": [0.984, 0.97, 0.77, 0.32, 0.10],
        "accuracy fine-tuned": [0.984, 0.983, 0.981, 0.978, 0.962],
        "tflite bytes": [250_372] * 5,
        "tflite gzip bytes": [230_575, 140_000, 70_000, 45_000, 30_000],
        "sparsity measured": SPARSITIES,
    }).set_index("sparsity")
    edges = np.linspace(-1, 1, 82)
    dense = np.histogram(rng.normal(0, 0.2, 60_000), edges)[0]
    counts = np.array([np.histogram(rng.normal(0, 0.3, int(60_000 * (1 - s))), edges)[0]
                       for s in SPARSITIES])
    return SparsitySweep(table, edges, dense, counts, 0.984)


def _count_renders(explorer) -> list:
    """Record every value the explorer renders from now on (a render draws a new frame)."""
    rendered, render = [], explorer._render

    def counting(value):
        rendered.append(value)
        return render(value)

    explorer._render = counting
    return rendered


def test_sparsity_explorer_renders_each_value_once_and_shows_the_row(sweep):
    explorer = widgets.sparsity_explorer(sweep)
    assert explorer._background is not None  # the static part is drawn once, then blitted
    rendered = _count_renders(explorer)
    assert [v for _, v in explorer.slider.options] == SPARSITIES
    assert "sparsity 0.0 %" in explorer.text and "98.4 %" in explorer.text
    frames, texts = {explorer.image.value}, {explorer.text}
    for value in SPARSITIES[1:]:  # first visit to each value: rendered on the move
        explorer.slider.value = value
        assert rendered[-1] == value and explorer.last_update_ms > 0
        frames.add(explorer.image.value)
        texts.add(explorer.text)
    assert len(frames) == len(texts) == len(SPARSITIES)  # every move changed plot and numbers
    explorer.slider.value = 0.9
    assert "sparsity 90.0 %" in explorer.text
    assert "one-shot 32.0 %" in explorer.text and "fine-tuned 97.8 %" in explorer.text
    assert "drop 0.6 points" in explorer.text
    assert "244.5 KB" in explorer.text and "43.9 KB" in explorer.text  # 45,000 B = 43.9 KB
    assert "5.12x smaller" in explorer.text  # 230,575 / 45,000
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert rendered == SPARSITIES[1:]  # one render per new value, none for the revisit of 0.9
    explorer.slider.value = 0.5
    assert rendered == SPARSITIES[1:]  # a revisit is a look-up
    assert explorer.image.value == explorer._frames[0.5][0]


def test_blitting_leaves_the_static_figure_unchanged(sweep):
    explorer = widgets.sparsity_explorer(sweep)
    children = [len(ax.get_children()) for ax in explorer.figure.axes]
    for value in SPARSITIES:
        explorer.slider.value = value
    assert [len(ax.get_children()) for ax in explorer.figure.axes] == children
    explorer.slider.value = 0.0
    first = explorer.image.value
    explorer._frames.clear()  # render the same value again from scratch
    explorer.slider.value = 0.5
    explorer.slider.value = 0.0
    assert explorer.image.value == first


def test_generic_explorer_with_a_dict_and_full_redraws():
    table = {1: {"y": 10.0}, 2: {"y": 20.0}, 3: {"y": 5.0}}

    def draw(value, row, figure):
        ax = figure.subplots()
        ax.bar([0], [row["y"]])
        return f"x = {value}: y = <b>{row['y']:.1f}</b> units"

    explorer = widgets.sweep_explorer(table, [1, 2, 3], draw, description="x", prerender=True)
    assert set(explorer._frames) == {1, 2, 3}
    assert explorer.text == "x = 1: y = 10.0 units"
    before = explorer.image.value
    rendered = _count_renders(explorer)
    explorer.slider.value = 3
    assert rendered == []  # prerendered: the move is a look-up
    assert explorer.text == "x = 3: y = 5.0 units" and explorer.image.value != before
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "x = 3\nx = 3: y = 5.0 units"


def test_bad_inputs_give_clear_errors(sweep):
    def draw(value, row, figure):
        return ""

    with pytest.raises(ValueError, match="at least one value"):
        widgets.sweep_explorer({1: 1}, [], draw)
    with pytest.raises(ValueError, match="slider value 7 has no row"):
        widgets.sweep_explorer({1: 1}, [1, 7], draw)
    with pytest.raises(ValueError, match="draw_fn must be callable, got str"):
        widgets.sweep_explorer({1: 1}, [1], "draw")
    broken = SparsitySweep(sweep.table, sweep.edges, sweep.dense_counts, sweep.counts[:2],
                           sweep.baseline_accuracy)
    with pytest.raises(ValueError, match="5 rows but 2 histograms"):
        widgets.sparsity_explorer(broken)

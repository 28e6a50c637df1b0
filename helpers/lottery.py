"""Iterative magnitude pruning and the lottery ticket (``deeper/structured_pruning_and_lottery_ticket``).

Frankle & Carbin (ICLR 2019, "The Lottery Ticket Hypothesis") train a dense network, prune
the smallest surviving weights, **rewind** the survivors to their *initial* values and train
again; repeated, this *iterative magnitude pruning* (IMP) finds sparse sub-networks (winning
tickets) that train to the dense accuracy. The control that makes it a finding: the same
mask with a **random re-initialisation** trains worse at high sparsity.

* :func:`prune_surviving` prunes a further fraction of the weights a mask still keeps;
* :func:`rewind` puts a mask on a model's initial weights, :func:`random_reinit` puts it on
  fresh random weights from the same initializers;
* :class:`MaskWeights` (a Keras callback) keeps pruned weights at zero while training, and
  :func:`train_masked` trains with it;
* :func:`lottery_experiment` runs IMP with rewinding and the random-re-init control over
  seeds (cached); :func:`iterative_vs_one_shot` compares prune-and-fine-tune in several
  cycles with one-shot pruning at the same final sparsity and training budget (cached).

The masks follow ``helpers.pruning``'s rule (``{layer: bool mask}``, ``True`` = keep).
Used by ``lessons/deeper/structured_pruning_and_lottery_ticket.ipynb`` and
``solutions/lab6_lottery_ticket.ipynb`` (whose students write the mask and the rewind).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import _validate, measure, models, plots, pruning
from helpers._tf import keras
from helpers.cache import cache_key, cached_arrays, cached_model, share_work
from helpers.data import Dataset

__all__ = ["lottery_mlp", "round_sparsities", "prune_surviving", "rewind", "random_reinit",
           "MaskWeights", "train_masked", "trained_dense", "lottery_experiment",
           "iterative_vs_one_shot", "summarize", "plot_tickets", "ticket_explorer"]


def lottery_mlp(input_shape=(28, 28, 1), num_classes: int = 10, hidden: int = 100,
                seed: int = 0) -> keras.Model:
    """A compiled MLP (784-``hidden``-10, a small LeNet-300-100) with seeded initial weights.

    The same ``seed`` always gives the same initial weights, the ones a ticket rewinds to.
    """
    models.set_seed(seed)
    return models.compile_model(models.mlp(input_shape, num_classes, hidden), 1.2e-3)


def round_sparsities(rounds: int, rate: float) -> list[float]:
    """Sparsity after each IMP round when each round prunes ``rate`` of what survives.

    ``round_sparsities(3, 0.5)`` is ``[0.5, 0.75, 0.875]``.
    """
    rounds = _validate.positive_int(rounds, "rounds")
    rate = _validate.number(rate, "rate", 0, 1, include_low=False, include_high=False)
    return [1.0 - (1.0 - rate) ** k for k in range(1, rounds + 1)]


def _check_masks(model: keras.Model, masks: Mapping[str, np.ndarray]) -> None:
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError(f"masks must be a non-empty dict {{layer name: boolean mask}}, "
                         f"got {type(masks).__name__}")
    for name, mask in masks.items():
        kernel = model.get_layer(name).get_weights()[0]
        if np.shape(mask) != kernel.shape:
            raise ValueError(f"mask for {name!r} must have shape {kernel.shape}, "
                             f"got {np.shape(mask)}")


def prune_surviving(model: keras.Model, masks: Mapping[str, np.ndarray],
                    rate: float) -> dict[str, np.ndarray]:
    """New masks that also remove ``rate`` of the weights each mask still keeps (per layer).

    The smallest ``|w|`` among the survivors go; removed weights never come back.

    Raises:
        ValueError: masks that do not match the model, or ``rate`` outside (0, 1).
    """
    _validate.model(model)
    _check_masks(model, masks)
    rate = _validate.number(rate, "rate", 0, 1, include_low=False, include_high=False)
    new = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        magnitude = np.abs(model.get_layer(name).get_weights()[0])[mask]
        keep = max(int(round(magnitude.size * (1.0 - rate))), 1)
        threshold = np.sort(magnitude)[-keep]
        new[name] = mask & (np.abs(model.get_layer(name).get_weights()[0]) >= threshold)
    return new


def _masked(model: keras.Model, weights: Sequence[np.ndarray],
            masks: Mapping[str, np.ndarray]) -> keras.Model:
    clone = models.compile_model(keras.models.clone_model(model), 1.2e-3)
    clone.set_weights(weights)
    for name, mask in masks.items():
        layer = clone.get_layer(name)
        values = layer.get_weights()
        values[0] = values[0] * np.asarray(mask, dtype=values[0].dtype)
        layer.set_weights(values)
    return clone


def rewind(model: keras.Model, initial_weights: Sequence[np.ndarray],
           masks: Mapping[str, np.ndarray]) -> keras.Model:
    """The ticket: a compiled copy of ``model`` with its initial weights, masked.

    Args:
        model: The trained model (its architecture is used; its weights are not).
        initial_weights: ``model.get_weights()`` taken before training (or at an early
            iteration, for "late rewinding").
        masks: ``{layer: boolean mask}`` (``True`` = keep).
    """
    _validate.model(model)
    _check_masks(model, masks)
    shapes = [w.shape for w in model.get_weights()]
    if [np.shape(w) for w in initial_weights] != shapes:
        raise ValueError("initial_weights must be model.get_weights() of the same "
                         "architecture taken before training")
    return _masked(model, initial_weights, masks)


def random_reinit(model: keras.Model, masks: Mapping[str, np.ndarray],
                  seed: int = 1000) -> keras.Model:
    """The control: the same mask on fresh random weights (the same initializers, another seed)."""
    _validate.model(model)
    _check_masks(model, masks)
    models.set_seed(seed)
    fresh = keras.models.clone_model(model)  # clone_model re-runs the initializers
    return _masked(model, fresh.get_weights(), masks)


class MaskWeights(keras.callbacks.Callback):
    """Multiply each masked kernel by its mask after every training step (pruned stay 0)."""

    def __init__(self, masks: Mapping[str, np.ndarray]):
        super().__init__()
        self.masks = {name: np.asarray(mask, dtype=np.float32) for name, mask in masks.items()}

    def _apply(self):
        for name, mask in self.masks.items():
            kernel = self.model.get_layer(name).kernel
            kernel.assign(kernel * mask)

    def on_train_begin(self, logs=None):
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        self._apply()


def train_masked(model: keras.Model, data: Dataset, masks: Mapping[str, np.ndarray] | None,
                 epochs: int, seed: int = 0) -> keras.Model:
    """Train a compiled model in place with its pruned weights held at zero; returns it."""
    _validate.model(model)
    _validate.dataset(data)
    callbacks = [MaskWeights(masks)] if masks else []
    models.train(model, data, epochs, 64, seed=seed, progress=False, callbacks=callbacks)
    return model


def _layers(model: keras.Model) -> list[str]:
    return pruning.prunable_layers(model)


def trained_dense(data: Dataset, seed: int = 0, epochs: int = 8, hidden: int = 100):
    """The dense MLP of one seed, trained once (cached), and its initial weights."""
    initial = lottery_mlp(data.input_shape, data.num_classes, hidden, seed).get_weights()
    key = f"lottery-dense-{data.name}-seed{seed}-{cache_key(epochs, hidden, len(data.x_train))}"
    model = cached_model(key, lambda: lottery_mlp(data.input_shape, data.num_classes, hidden,
                                                  seed),
                         lambda m: train_masked(m, data, None, epochs, seed))
    return model, initial


def _sparsity(masks: Mapping[str, np.ndarray]) -> float:
    return 1.0 - sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values())


def _accuracy(model, data: Dataset) -> float:
    return measure.accuracy(model, data.x_test, data.y_test)


def lottery_experiment(data: Dataset, seeds: Sequence[int] = (0, 1, 2), rounds: int = 4,
                       rate: float = 0.5, epochs: int = 8, hidden: int = 100,
                       cache: bool = True) -> pd.DataFrame:
    """IMP with rewinding to init, against a random re-init of each mask, over seeds.

    Per seed: train dense; then each round prunes ``rate`` of the survivors of each layer
    (the output layer at half the rate, as Frankle & Carbin do), and trains two models
    for ``epochs`` under the new mask: the ticket (rewound to the initial weights) and the
    control (random re-init). The next round prunes the trained ticket.

    Returns:
        One row per seed and round (round 0 = dense): ``seed``, ``round``, ``sparsity``
        (of all kernels), ``ticket`` and ``reinit`` test accuracies (fractions).
    """
    _validate.dataset(data)
    seeds = [_validate.integer(s, "seed", 0) for s in seeds]
    rounds = _validate.positive_int(rounds, "rounds")
    epochs = _validate.epochs(epochs)
    rate = _validate.number(rate, "rate", 0, 1, include_low=False, include_high=False)

    def run(seed: int) -> dict[str, np.ndarray]:
        dense, initial = trained_dense(data, seed, epochs, hidden)
        names = _layers(dense)
        masks = {n: np.ones(dense.get_layer(n).get_weights()[0].shape, bool) for n in names}
        rows, current = [[0, 0.0, _accuracy(dense, data), _accuracy(dense, data)]], dense
        for k in range(1, rounds + 1):
            masks = {n: prune_surviving(current, {n: m}, rate / 2 if n == names[-1] else rate)[n]
                     for n, m in masks.items()}
            ticket = train_masked(rewind(dense, initial, masks), data, masks, epochs, seed)
            control = train_masked(random_reinit(dense, masks, seed + 1000), data,
                                   masks, epochs, seed)
            rows.append([k, _sparsity(masks), _accuracy(ticket, data), _accuracy(control, data)])
            current = ticket
        return {"rows": np.array(rows, dtype=np.float64)}

    def frame(seed: int) -> pd.DataFrame:
        key = f"lottery-imp-{data.name}-seed{seed}-" + cache_key(
            rounds, rate, epochs, hidden, len(data.x_train), "v1")
        rows = cached_arrays(key, lambda: run(seed), cache)["rows"]
        table = pd.DataFrame(rows, columns=["round", "sparsity", "ticket", "reinit"])
        return table.assign(seed=seed, round=table["round"].astype(int))

    frames = share_work(seeds, frame)  # parallel workers take different seeds
    return pd.concat(frames, ignore_index=True)[["seed", "round", "sparsity", "ticket",
                                                  "reinit"]]


def iterative_vs_one_shot(data: Dataset, final_sparsity: float, cycles: int = 4,
                          epochs_per_cycle: int = 2, seeds: Sequence[int] = (0, 1, 2),
                          dense_epochs: int = 8, hidden: int = 100,
                          cache: bool = True) -> pd.DataFrame:
    """Prune-and-fine-tune in ``cycles`` steps against one-shot, same sparsity and budget.

    Both start from the trained dense MLP of each seed (no rewinding). Iterative: ``cycles``
    times, prune (per layer, magnitude) to the next sparsity of a geometric schedule ending at
    ``final_sparsity``, fine-tune ``epochs_per_cycle``. One-shot: prune to ``final_sparsity``
    at once, fine-tune ``cycles * epochs_per_cycle`` epochs. The output layer is pruned at
    half the rate in both (as in :func:`lottery_experiment`): its 1,000 weights matter most.

    Returns:
        One row per seed: ``seed``, ``dense``, ``one_shot``, ``iterative`` accuracies and
        the kernels' overall sparsity of each (``sparsity_iterative``, ``sparsity_one_shot``).
    """
    _validate.dataset(data)
    final = _validate.sparsity(final_sparsity, "final_sparsity")
    cycles = _validate.positive_int(cycles, "cycles")
    epochs_per_cycle = _validate.epochs(epochs_per_cycle, "epochs_per_cycle")
    rate = 1.0 - (1.0 - final) ** (1.0 / cycles)

    def run(seed: int) -> dict[str, np.ndarray]:
        dense, _ = trained_dense(data, seed, dense_epochs, hidden)
        names = _layers(dense)
        rates = {n: rate / 2 if n == names[-1] else rate for n in names}
        one_masks = pruning.magnitude_masks(
            dense, {n: 1.0 - (1.0 - r) ** cycles for n, r in rates.items()})
        one = train_masked(pruning.apply_masks(dense, one_masks), data, one_masks,
                           cycles * epochs_per_cycle, seed)
        masks = {n: np.ones(dense.get_layer(n).get_weights()[0].shape, bool) for n in names}
        work = pruning.copy_model(dense)
        for _ in range(cycles):
            masks = {n: prune_surviving(work, {n: m}, rates[n])[n] for n, m in masks.items()}
            work = train_masked(pruning.apply_masks(work, masks), data, masks,
                                epochs_per_cycle, seed)
        return {"row": np.array([_accuracy(dense, data), _accuracy(one, data),
                                 _accuracy(work, data), _sparsity(masks), _sparsity(one_masks)])}

    def row(seed: int) -> list:
        key = f"lottery-iterative-{data.name}-seed{seed}-" + cache_key(
            final, cycles, epochs_per_cycle, dense_epochs, hidden, len(data.x_train), "v2")
        return [seed, *cached_arrays(key, lambda: run(seed), cache)["row"]]

    rows = share_work(seeds, row)  # parallel workers take different seeds
    return pd.DataFrame(rows, columns=["seed", "dense", "one_shot", "iterative",
                                       "sparsity_iterative", "sparsity_one_shot"])


def summarize(results: pd.DataFrame, columns: Sequence[str] = ("ticket", "reinit"),
              by: str = "round") -> pd.DataFrame:
    """Mean and std (over seeds, ddof=1) of ``columns`` in points, per ``by`` value."""
    if not isinstance(results, pd.DataFrame) or by not in results:
        raise ValueError(f"results must be a DataFrame with a {by!r} column "
                         f"(from lottery_experiment)")
    grouped = results.groupby(by)
    table = pd.DataFrame({"sparsity %": 100 * grouped["sparsity"].mean()}) \
        if "sparsity" in results else pd.DataFrame(index=grouped.size().index)
    for column in columns:
        table[f"{column} mean %"] = 100 * grouped[column].mean()
        table[f"{column} std"] = 100 * grouped[column].std(ddof=1).fillna(0.0)
    return table


def plot_tickets(summary: pd.DataFrame, ax=None):
    """Ticket and random re-init accuracy (mean +/- std over seeds) against sparsity."""
    ax = plots.new_axes("Lottery ticket: rewind vs random re-init", "sparsity (% of weights "
                        "removed)", "test accuracy (%)", ax=ax)
    for column, label in (("ticket", "rewound to init (ticket)"),
                          ("reinit", "same mask, random re-init")):
        ax.errorbar(summary["sparsity %"], summary[f"{column} mean %"],
                    yerr=summary[f"{column} std"], marker="o", capsize=3, label=label)
    ax.legend(fontsize=8)
    return ax


def ticket_explorer(summary: pd.DataFrame, standard_error_points: float,
                    prerender: bool = False):
    """A sparsity slider over :func:`summarize`'s table: both curves, the gap at that point.

    Args:
        summary: From :func:`summarize` (indexed by round, with ``sparsity %``).
        standard_error_points: The test set's standard error at the dense accuracy, in points.
        prerender: Render every frame now (see ``helpers.widgets.sweep_explorer``).
    """
    from helpers import widgets  # imported here: ipywidgets is only needed for the explorer

    table = summary.set_index("sparsity %")

    def setup(figure):
        plot_tickets(summary, ax=figure.subplots())

    def draw(value, row, figure):
        figure.axes[0].axvline(value, color=plots.COLORS["accent"], alpha=0.6)
        gap = row["ticket mean %"] - row["reinit mean %"]
        return (f"<b>sparsity {value:.1f} %</b> &nbsp;|&nbsp; ticket <b>"
                f"{row['ticket mean %']:.1f} +/- {row['ticket std']:.1f} %</b>, random re-init "
                f"<b>{row['reinit mean %']:.1f} +/- {row['reinit std']:.1f} %</b> &nbsp;|&nbsp; "
                f"gap {gap:+.1f} points (test-set SE +/-{standard_error_points:.1f})")

    return widgets.sweep_explorer(table, list(table.index), draw, setup, description="sparsity",
                                  format_value=lambda s: f"{s:.0f}%", prerender=prerender)

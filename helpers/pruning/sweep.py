"""Sparsity sweeps: accuracy and file sizes over a range of sparsities (lesson 01's plot)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers import _validate, measure
from helpers._tf import keras
from helpers._validate import dataset, positive_int
from helpers.cache import cache_key, cached_arrays, model_digest
from helpers.data import Dataset
from helpers.pruning.magnitude import SCOPES, _kernel, prunable_layers, prune_low_magnitude
from helpers.pruning.with_tfmot import SCHEDULES, prune_and_fine_tune

__all__ = ["SparsitySweep", "sparsity_sweep", "SPARSITY", "SPARSITY_MEASURED", "ACCURACY_ONE_SHOT",
           "ACCURACY_FINE_TUNED", "TFLITE_BYTES", "TFLITE_GZIP_BYTES"]


@dataclass
class SparsitySweep:
    """Accuracy and sizes measured at several sparsities (one row per sparsity).

    Attributes:
        table: Indexed by ``sparsity`` (fraction); columns ``accuracy one-shot`` (pruned,
            no training), ``accuracy fine-tuned``, ``tflite bytes``, ``tflite gzip bytes``
            (of the fine-tuned model) and ``sparsity measured``.
        edges: Histogram bin edges for the kernel weights (weights beyond them are counted
            in the end bins).
        dense_counts: Histogram of the original model's kernel weights.
        counts: One histogram per row of the non-zero kernel weights after fine-tuning.
        baseline_accuracy: Accuracy of the unpruned model.
    """

    table: pd.DataFrame
    edges: np.ndarray
    dense_counts: np.ndarray
    counts: np.ndarray
    baseline_accuracy: float


def _all_kernels(model: keras.Model) -> np.ndarray:
    return np.concatenate([_kernel(model.get_layer(name)).ravel()
                           for name in prunable_layers(model)])


def sparsity_sweep(model: keras.Model, data: Dataset,
                   sparsities: Sequence[float] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
                   epochs: int = 4, schedule: str = "polynomial", scope: str = "global",
                   bins: int = 81, cache: bool = True, progress: bool = True) -> SparsitySweep:
    """Prune ``model`` to each sparsity, with and without fine-tuning, and measure it.

    Each point: one-shot magnitude pruning (:func:`prune_low_magnitude`, no training) and
    :func:`prune_and_fine_tune` (TFMOT); accuracy of both on ``data.x_test``; the fine-tuned
    model's TFLite file and its gzip; a histogram of its surviving weights. Fine-tuning
    dominates the cost (seconds per point), so with ``cache=True`` the fine-tuned weights
    and the measured table are cached (keyed by a hash of the model, data and recipe): the
    first call computes everything with this code, later calls load it.

    Returns:
        A :class:`SparsitySweep`.
    """
    _validate.model(model)
    dataset(data)
    points = [_validate.sparsity(s, f"sparsities[{i}]") for i, s in enumerate(sparsities)]
    if not points or sorted(set(points)) != points:
        raise ValueError(f"sparsities must be increasing and distinct, got {list(sparsities)}")
    bins = positive_int(bins, "bins")
    epochs = positive_int(epochs, "epochs")
    _validate.one_of(schedule, "schedule", SCHEDULES)
    _validate.one_of(scope, "scope", SCOPES)
    recipe = {"sparsities": points, "epochs": epochs, "schedule": schedule, "scope": scope,
              "bins": bins, "data": data.name, "model": model_digest(model), "version": 2}
    key = f"sweep-{model.name}-{data.name}-{cache_key(recipe)}"
    return _sweep_from_arrays(cached_arrays(
        key, lambda: _measure_sweep(model, data, points, epochs, schedule, scope, bins, cache,
                                    progress), cache))


def _measure_sweep(model, data, points, epochs, schedule, scope, bins, cache, progress):
    dense = _all_kernels(model)
    limit = 1.25 * float(np.abs(dense).max())  # fine-tuning can grow weights a little
    edges = np.linspace(-limit, limit, bins + 1)
    rows, counts = [], []
    for s in points:
        one_shot = prune_low_magnitude(model, s, scope)
        tuned = model if s == 0 else prune_and_fine_tune(
            model, data, s, epochs, schedule, scope, cache=cache, progress=progress)
        flatbuffer = measure.to_tflite(tuned)
        survivors = _all_kernels(tuned)
        rows.append([s, measure.accuracy(one_shot, data.x_test, data.y_test),
                     measure.accuracy(tuned, data.x_test, data.y_test), len(flatbuffer),
                     measure.gzip_bytes(flatbuffer), measure.sparsity(tuned)])
        survivors = np.clip(survivors[survivors != 0], edges[0], edges[-1])  # count them all
        counts.append(np.histogram(survivors, edges)[0])
    arrays = {"rows": np.array(rows, dtype=np.float64), "edges": edges,
              "dense_counts": np.histogram(dense, edges)[0], "counts": np.array(counts),
              "baseline_accuracy": np.array(measure.accuracy(model, data.x_test, data.y_test))}
    return arrays


# The columns of SparsitySweep.table (indexed by SPARSITY); helpers.widgets reads them by name.
SPARSITY, SPARSITY_MEASURED = "sparsity", "sparsity measured"
ACCURACY_ONE_SHOT, ACCURACY_FINE_TUNED = "accuracy one-shot", "accuracy fine-tuned"
TFLITE_BYTES, TFLITE_GZIP_BYTES = "tflite bytes", "tflite gzip bytes"
_SWEEP_COLUMNS = [SPARSITY, ACCURACY_ONE_SHOT, ACCURACY_FINE_TUNED, TFLITE_BYTES,
                  TFLITE_GZIP_BYTES, SPARSITY_MEASURED]


def _sweep_from_arrays(arrays) -> SparsitySweep:
    table = pd.DataFrame(arrays["rows"], columns=_SWEEP_COLUMNS).set_index(SPARSITY)
    table = table.astype({TFLITE_BYTES: int, TFLITE_GZIP_BYTES: int})
    return SparsitySweep(table, np.asarray(arrays["edges"]), np.asarray(arrays["dense_counts"]),
                         np.asarray(arrays["counts"]), float(arrays["baseline_accuracy"]))

"""Measured, cached clustering experiments for ``lessons/deeper/weight_clustering.ipynb``.

* :func:`cluster_sweep` -- codebook size against accuracy, TFLite bytes and gzip bytes
  (k-means from scratch, no fine-tuning: each row costs one clustering and one evaluation);
* :func:`init_comparison` -- TFMOT's four centroid initializations, before and after a short
  fine-tuning;
* :func:`sparsity_preservation` -- a pruned model clustered by TFMOT with and without
  ``preserve_sparsity``: how many zeros survive, and what gzip sees.

Every result is stored with :func:`helpers.cache.cached_arrays`, keyed by the recipe and the
model's weights, so a second run only reads the tables.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers import _validate, measure
from helpers._tf import keras
from helpers.cache import cache_key, cached_arrays, model_digest
from helpers.clustering.scratch import TFMOT_INITS, _validate_clusters, cluster_model
from helpers.clustering.tfmot import cluster_with_tfmot

__all__ = ["SWEEP_CLUSTERS", "cluster_sweep", "init_comparison", "sparsity_preservation"]

SWEEP_CLUSTERS = (2, 3, 4, 6, 8, 12, 16, 32, 64)


def _sizes(model: keras.Model) -> tuple[int, int]:
    flatbuffer = measure.to_tflite(model)
    return len(flatbuffer), measure.gzip_bytes(flatbuffer)


def cluster_sweep(model: keras.Model, data, clusters: Sequence[int] = SWEEP_CLUSTERS,
                  init: str = "linear", cache: bool = True) -> pd.DataFrame:
    """Accuracy and bytes of ``model`` clustered to each codebook size (no fine-tuning).

    Args:
        model: A trained Keras model (not modified).
        data: A :class:`helpers.data.Dataset` (its test split is measured).
        clusters: Codebook sizes, each in [2, 256].
        init: Centroid initialization of :func:`helpers.clustering.kmeans`.
        cache: Store / reuse the table in the course cache.

    Returns:
        A table indexed by ``clusters``: ``accuracy``, ``tflite_bytes``, ``gzip_bytes``,
        ``index_bits`` (``ceil(log2 k)``), plus the unclustered model as ``clusters = 0``.
    """
    _validate.model(model)
    _validate.dataset(data)
    values = [_validate_clusters(k) for k in clusters]
    if not values:
        raise ValueError("clusters must name at least one codebook size, got none")

    def compute():
        rows = []
        for k in [0, *values]:
            clustered = model if k == 0 else cluster_model(model, k, init)
            rows.append([k, measure.accuracy(clustered, data.x_test, data.y_test),
                         *_sizes(clustered)])
        return {"table": np.array(rows, dtype=np.float64)}

    key = f"cluster-sweep-{data.name}-{cache_key(values, init, len(data.x_test), model_digest(model))}"
    table = cached_arrays(key, compute, cache)["table"]
    frame = pd.DataFrame(table[:, 1:], index=pd.Index(table[:, 0].astype(int), name="clusters"),
                         columns=["accuracy", "tflite_bytes", "gzip_bytes"])
    frame["index_bits"] = [0 if k == 0 else int(np.ceil(np.log2(k))) for k in frame.index]
    return frame.astype({"tflite_bytes": int, "gzip_bytes": int})


def init_comparison(model: keras.Model, data, clusters: int = 8, epochs: int = 1,
                    learning_rate: float = 1e-4, cache: bool = True) -> pd.DataFrame:
    """TFMOT's centroid initializations: accuracy right after clustering and after fine-tuning.

    Args:
        model: A trained Keras model (not modified).
        data: A :class:`helpers.data.Dataset`.
        clusters: Clusters per kernel, in [2, 256].
        epochs: Fine-tuning epochs (>= 1) of the second column.
        learning_rate: Adam learning rate of the fine-tuning.
        cache: Store / reuse the table in the course cache.

    Returns:
        A table indexed by initialization (``kmeans++``, ``linear``, ``density``, ``random``)
        with ``accuracy clustered`` and ``accuracy fine-tuned`` (fractions).
    """
    _validate.model(model)
    _validate.dataset(data)
    clusters = _validate_clusters(clusters)
    epochs = _validate.positive_int(epochs, "epochs")

    def compute():
        rows = []
        for init in TFMOT_INITS:
            plain = cluster_with_tfmot(model, clusters, init, epochs=0)
            tuned = cluster_with_tfmot(model, clusters, init, data, epochs, learning_rate)
            rows.append([measure.accuracy(m, data.x_test, data.y_test) for m in (plain, tuned)])
        return {"table": np.array(rows)}

    key = (f"cluster-inits-{data.name}-"
           f"{cache_key(clusters, epochs, learning_rate, len(data.x_train), model_digest(model))}")
    table = cached_arrays(key, compute, cache)["table"]
    return pd.DataFrame(table, index=pd.Index(TFMOT_INITS, name="init"),
                        columns=["accuracy clustered", "accuracy fine-tuned"])


def sparsity_preservation(pruned: keras.Model, data, clusters: int = 8, epochs: int = 1,
                          learning_rate: float = 1e-4, cache: bool = True) -> pd.DataFrame:
    """Cluster a pruned model with TFMOT, with and without ``preserve_sparsity``.

    Args:
        pruned: A pruned (zeros in its kernels), trained Keras model (not modified).
        data: A :class:`helpers.data.Dataset`.
        clusters: Clusters per kernel, in [2, 256].
        epochs: Fine-tuning epochs (>= 1) of each clustered model.
        learning_rate: Adam learning rate of the fine-tuning.
        cache: Store / reuse the table in the course cache.

    Returns:
        A table indexed by ``pruned``, ``clustered``, ``clustered, sparsity kept`` with
        ``sparsity`` (fraction of kernel zeros), ``accuracy``, ``tflite_bytes``,
        ``gzip_bytes``.
    """
    _validate.model(pruned)
    _validate.dataset(data)
    clusters = _validate_clusters(clusters)
    epochs = _validate.positive_int(epochs, "epochs")

    def compute():
        rows = []
        for keep in (None, False, True):
            model = pruned if keep is None else cluster_with_tfmot(
                pruned, clusters, "kmeans++", data, epochs, learning_rate,
                preserve_sparsity=keep)
            rows.append([measure.sparsity(model),
                         measure.accuracy(model, data.x_test, data.y_test),
                         *_sizes(model)])
        return {"table": np.array(rows, dtype=np.float64)}

    key = (f"cluster-sparsity2-{data.name}-"
           f"{cache_key(clusters, epochs, learning_rate, len(data.x_train), model_digest(pruned))}")
    table = cached_arrays(key, compute, cache)["table"]
    frame = pd.DataFrame(table, columns=["sparsity", "accuracy", "tflite_bytes", "gzip_bytes"],
                         index=["pruned", "clustered", "clustered, sparsity kept"])
    return frame.astype({"tflite_bytes": int, "gzip_bytes": int})

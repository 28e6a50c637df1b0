"""Weight sharing (clustering): many weights, few distinct values (deeper/weight clustering).

Deep Compression (Han et al. 2016, "Deep Compression", ICLR) replaces the weights of a layer
by ``k`` shared values, the centroids of a 1-D k-means over the weights. A layer then stores a
small *codebook* (``k`` floats) plus one ``log2(k)``-bit *index* per weight.

* :func:`kmeans` -- 1-D k-means from scratch in NumPy, with the paper's three centroid
  initializations: ``"linear"`` (evenly spaced between min and max, best in the paper),
  ``"density"`` (evenly spaced on the weights' CDF) and ``"random"`` (Forgy: k random weights).
* :func:`cluster_weights` -- one tensor to ``(codebook, indices)``; pruned zeros stay exactly
  zero (they are not clustered, so a pruned-then-clustered layer keeps its sparsity).
* :func:`cluster_model` -- every kernel of a Keras model, per layer, in a new model.
* :class:`KeepClusters` -- a Keras callback that fine-tunes the *centroids*: after every
  batch each weight is reset to the mean of its cluster (the average of the cluster's
  gradient steps, TFMOT's ``GradientAggregation.AVG``); pruned zeros stay zero.
* :func:`cluster_with_tfmot` -- the library route: ``tfmot.clustering.keras.cluster_weights``,
  fine-tuning, then ``strip_clustering``;
* :func:`pcqat` -- prune- and cluster-preserving quantization-aware training (TFMOT's
  collaborative optimization), for a model that is pruned, clustered and then int8.

Used by the weight-clustering deeper notebook, ``helpers.codec`` (Deep Compression) and the
benchmark.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from helpers import _validate
from helpers._tf import keras
from helpers.models import compile_model, train

import tensorflow_model_optimization as tfmot  # noqa: E402  (after helpers._tf: Keras 2)
from tensorflow_model_optimization.python.core.clustering.keras.experimental import (  # noqa
    cluster as experimental)

__all__ = ["INITS", "TFMOT_INITS", "MIN_CLUSTERS", "MAX_CLUSTERS", "initial_centroids", "assign",
           "kmeans", "cluster_weights", "shared_weights", "cluster_model", "unique_values",
           "KeepClusters", "cluster_with_tfmot"]

__all__ = ["INITS", "TFMOT_INITS", "MIN_CLUSTERS", "MAX_CLUSTERS", "initial_centroids", "assign",
           "kmeans", "cluster_weights", "shared_weights", "cluster_model", "unique_values",
           "KeepClusters", "cluster_with_tfmot", "pcqat"]

INITS = ("linear", "density", "random")
TFMOT_INITS = ("kmeans++", "linear", "density", "random")
MIN_CLUSTERS, MAX_CLUSTERS = 2, 256


# ---------------------------------------------------------------------------- validation
def _validate_clusters(clusters, name: str = "clusters") -> int:
    return _validate.integer(clusters, name, MIN_CLUSTERS, MAX_CLUSTERS)


def _validate_init(init: str, allowed: tuple[str, ...] = INITS) -> str:
    return _validate.one_of(init, "init", allowed)


def _finite_array(values, name: str = "weights") -> np.ndarray:
    return _validate.finite_array(values, name, dtype=None, allow_empty=True)


# ---------------------------------------------------------------------------- k-means
def initial_centroids(values: np.ndarray, clusters: int, init: str = "linear",
                      seed: int = 0) -> np.ndarray:
    """The starting centroids of 1-D k-means, as compared in Han et al. 2016 (Fig. 4).

    Args:
        values: The weights to cluster (any shape; flattened).
        clusters: Number of centroids ``k`` in [2, 256].
        init: ``"linear"`` (``k`` evenly spaced values from min to max, the same as TFMOT's
            ``CentroidInitialization.LINEAR``), ``"density"`` (the ``(i + 0.5) / k``
            quantiles, evenly spaced on the CDF) or ``"random"`` (Forgy: ``k`` distinct
            weights picked at random).
        seed: Seed of the ``"random"`` initialization.

    Returns:
        Sorted float64 centroids, ``k`` of them (fewer for ``"random"`` if there are fewer
        distinct values).
    """
    clusters = _validate_clusters(clusters)
    init = _validate_init(init)
    flat = _finite_array(values).astype(np.float64).ravel()
    if flat.size == 0:
        raise ValueError("values must not be empty")
    if init == "linear":
        return np.linspace(flat.min(), flat.max(), clusters)
    if init == "density":
        return np.quantile(flat, (np.arange(clusters) + 0.5) / clusters)
    distinct = np.unique(flat)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(distinct, size=min(clusters, distinct.size), replace=False))


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for every value (``centroids`` sorted ascending).

    In 1-D the nearest centroid is found by a binary search on the midpoints between
    neighbouring centroids: ``O(n log k)`` instead of an ``n x k`` distance matrix.
    """
    centroids = np.asarray(centroids, dtype=np.float64)
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(midpoints, np.asarray(values, dtype=np.float64), side="left")


def kmeans(values: np.ndarray, clusters: int, init: str = "linear", max_iterations: int = 100,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means (Lloyd's algorithm) from scratch: ``values ~= codebook[indices]``.

    Alternates *assign each value to its nearest centroid* and *move each centroid to the
    mean of its values* until no assignment changes. A cluster left empty is re-seeded on
    the value that its centroid represents worst, so all ``clusters`` entries get used. If
    there are at most ``clusters`` distinct values, the codebook is exactly those values
    (lossless).

    Args:
        values: The weights (any shape).
        clusters: Maximum codebook size ``k`` in [2, 256].
        init: Centroid initialization, see :func:`initial_centroids`.
        max_iterations: Upper bound on Lloyd iterations (>= 1).
        seed: Seed of the ``"random"`` initialization.

    Returns:
        ``(codebook, indices)``: sorted float32 centroids and, with the shape of ``values``,
        the uint8 index of each value's centroid.

    Example:
        >>> codebook, indices = kmeans(np.array([0.1, 0.12, 0.9, 1.0]), 2)
        >>> codebook[indices]  # doctest: +SKIP
        array([0.11, 0.11, 0.95, 0.95], dtype=float32)
    """
    clusters = _validate_clusters(clusters)
    max_iterations = _validate.positive_int(max_iterations, "max_iterations")
    array = _finite_array(values, "values")
    if array.size == 0:
        raise ValueError("values must not be empty")
    flat = array.astype(np.float64).ravel()
    distinct, inverse = np.unique(flat.astype(np.float32), return_inverse=True)
    if distinct.size <= clusters:  # nothing to share: the codebook is the values themselves
        return distinct.astype(np.float32), inverse.reshape(array.shape).astype(np.uint8)
    centroids = initial_centroids(flat, clusters, init, seed)
    labels = assign(flat, centroids)
    for _ in range(int(max_iterations)):
        counts = np.bincount(labels, minlength=centroids.size)
        sums = np.bincount(labels, weights=flat, minlength=centroids.size)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if not counts.all():
            centroids = _reseed_empty(flat, centroids, labels, counts == 0)
        new_labels = assign(flat, centroids)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    codebook = centroids.astype(np.float32)
    # float32 rounding can merge two centroids: keep the codebook distinct and sorted
    codebook, remap = np.unique(codebook, return_inverse=True)
    return codebook, remap[labels].reshape(array.shape).astype(np.uint8)


def _reseed_empty(flat: np.ndarray, centroids: np.ndarray, labels: np.ndarray,
                  empty: np.ndarray) -> np.ndarray:
    """Move empty clusters onto the worst-represented values (as scikit-learn does).

    Linear initialization spaces centroids evenly between min and max, so with long-tailed
    weights some start with no members; re-seeding them keeps all ``k`` codebook entries in
    use instead of wasting index bits.
    """
    error = (flat - centroids[labels]) ** 2
    taken = set(centroids[~empty].tolist())
    seeds = []
    for value in flat[np.argsort(-error, kind="stable")]:
        if value not in taken:
            taken.add(value)
            seeds.append(value)
            if len(seeds) == int(empty.sum()):
                break
    centroids = centroids.copy()
    centroids[np.flatnonzero(empty)[:len(seeds)]] = seeds
    keep = ~empty
    keep[np.flatnonzero(empty)[:len(seeds)]] = True
    return np.sort(centroids[keep])


# ---------------------------------------------------------------------------- tensors
def cluster_weights(weights: np.ndarray, clusters: int = 16, init: str = "linear",
                    preserve_zeros: bool = True, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Share the values of one weight tensor: ``weights ~= codebook[indices]``.

    Args:
        weights: A weight tensor (any shape).
        clusters: Maximum codebook size ``k`` in [2, 256] (``log2(k)`` bits per index).
        init: Centroid initialization (``"linear"``, ``"density"`` or ``"random"``).
        preserve_zeros: Keep exact zeros (pruned weights) at zero: only the non-zero weights
            are clustered, into ``k - 1`` centroids, and ``codebook[0] == 0`` is the
            pruned weights' entry. Without it, zeros are clustered like any value.
        seed: Seed of the ``"random"`` initialization.

    Returns:
        ``(codebook, indices)``: float32 codebook of at most ``clusters`` entries and uint8
        indices with the shape of ``weights``. ``codebook[indices]`` are the shared weights.
    """
    clusters = _validate_clusters(clusters)
    _validate_init(init)
    array = _finite_array(weights)
    if array.size == 0:
        raise ValueError("weights must not be empty")
    if not preserve_zeros:
        return kmeans(array, clusters, init, seed=seed)
    nonzero = array != 0
    indices = np.zeros(array.shape, dtype=np.uint8)
    if not nonzero.any():
        return np.zeros(1, np.float32), indices
    if nonzero.all():  # nothing was pruned: no zero entry needed, use all k centroids
        return kmeans(array, clusters, init, seed=seed)
    codebook, nonzero_indices = kmeans(array[nonzero], clusters - 1, init, seed=seed) \
        if clusters > 2 else _one_centroid(array[nonzero])
    indices[nonzero] = nonzero_indices + 1
    return np.concatenate([[np.float32(0)], codebook]).astype(np.float32), indices


def _one_centroid(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k = 1: the mean (k-means' only fixed point); kmeans() itself needs k >= 2."""
    return (np.array([np.mean(values, dtype=np.float64)], np.float32),
            np.zeros(values.shape, np.uint8))


def shared_weights(weights: np.ndarray, clusters: int = 16, init: str = "linear",
                   preserve_zeros: bool = True, seed: int = 0) -> np.ndarray:
    """``codebook[indices]`` of :func:`cluster_weights`: the tensor with shared values."""
    codebook, indices = cluster_weights(weights, clusters, init, preserve_zeros, seed)
    return codebook[indices].astype(np.asarray(weights).dtype)


# ---------------------------------------------------------------------------- models
def _kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that own a kernel (a weight with ndim >= 2), in order."""
    return [layer for layer in model.layers
            if any(len(w.shape) >= 2 for w in layer.weights)]


def _per_layer(value, layer_names: list[str], name: str) -> dict[str, int]:
    """Expand an int or a {layer name: int} mapping to every layer to cluster."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(layer_names))
        if unknown:
            raise ValueError(f"{name} names unknown layers {unknown}; layers with kernels: "
                             f"{layer_names}")
        return {layer: _validate_clusters(value[layer], f"{name}[{layer!r}]")
                for layer in layer_names if layer in value}
    value = _validate_clusters(value, name)
    return dict.fromkeys(layer_names, value)


def cluster_model(model: keras.Model, clusters: int | Mapping[str, int] = 16,
                  init: str = "linear", preserve_zeros: bool = True,
                  layers: Iterable[str] | None = None, seed: int = 0) -> keras.Model:
    """A copy of ``model`` whose kernels are clustered, layer by layer (biases untouched).

    Args:
        model: A Keras model (not modified).
        clusters: Codebook size ``k`` in [2, 256] for every layer, or ``{layer name: k}``
            (layers not in the mapping are left alone), e.g. ``{"conv1": 256, "fc1": 16}``.
        init: Centroid initialization (see :func:`initial_centroids`).
        preserve_zeros: Keep pruned (zero) weights at zero.
        layers: Names of the layers to cluster; default every layer with a kernel.
        seed: Seed of the ``"random"`` initialization.

    Returns:
        A new model, compiled like :func:`helpers.models.compile_model`, with each kernel
        holding at most ``k`` distinct values.
    """
    _validate.model(model)
    _validate_init(init)
    names = [layer.name for layer in _kernel_layers(model)]
    if layers is not None:
        layers = list(layers)
        unknown = sorted(set(layers) - set(names))
        if unknown:
            raise ValueError(f"layers names unknown layers {unknown}; layers with kernels: "
                             f"{names}")
        names = [n for n in names if n in layers]
    per_layer = _per_layer(clusters, names, "clusters")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        if layer.name not in per_layer:
            continue
        layer.set_weights([shared_weights(w, per_layer[layer.name], init, preserve_zeros, seed)
                           if w.ndim >= 2 else w for w in layer.get_weights()])
    return compile_model(clone)


def unique_values(model: keras.Model) -> dict[str, int]:
    """Number of distinct values of each kernel, by layer name (a check of clustering)."""
    return {layer.name: int(np.unique(w).size)
            for layer in _kernel_layers(model) for w in layer.get_weights() if w.ndim >= 2}


class KeepClusters(keras.callbacks.Callback):
    """Fine-tune the centroids of a clustered model: weights stay shared during training.

    At the start of training each kernel's distinct values define its clusters (zeros are
    pruned weights and stay zero). After every batch each weight is set back to the mean of
    its cluster, so a cluster moves by the average of its members' updates (Han et al.'s
    centroid fine-tuning, with TFMOT's ``GradientAggregation.AVG``), and the number of
    distinct values never grows.

    Args:
        model: The clustered model whose kernels to keep shared; default the model being
            trained. Name it when training through a wrapper such as
            :class:`helpers.distillation.Distiller` (whose teacher must not be touched).

    Example:
        >>> clustered = cluster_model(model, 16)
        >>> train(clustered, data, epochs=2, callbacks=[KeepClusters()])  # doctest: +SKIP
    """

    def __init__(self, model: keras.Model | None = None):
        super().__init__()
        self._target = model if model is None else _validate.model(model)

    def on_train_begin(self, logs=None):
        self._clusters = []
        for variable in (self._target or self.model).weights:
            if len(variable.shape) < 2:
                continue
            values = variable.numpy()
            _, labels = np.unique(values, return_inverse=True)
            self._clusters.append((variable, labels.ravel(), values != 0))

    def on_train_batch_end(self, batch, logs=None):
        for variable, labels, nonzero in self._clusters:
            values = variable.numpy().ravel().astype(np.float64)
            means = np.bincount(labels, weights=values) / np.bincount(labels)
            shared = means[labels].reshape(nonzero.shape).astype(np.float32)
            variable.assign(np.where(nonzero, shared, np.float32(0)))


# ---------------------------------------------------------------------------- TFMOT
def cluster_with_tfmot(model: keras.Model, clusters: int = 16, init: str = "kmeans++",
                       data=None, epochs: int = 1, learning_rate: float = 1e-4,
                       preserve_sparsity: bool = False, batch_size: int = 64,
                       progress: bool = False) -> keras.Model:
    """Cluster with the TensorFlow Model Optimization Toolkit, fine-tune, then strip.

    ``tfmot.clustering.keras.cluster_weights`` wraps each layer so its kernel is
    ``centroids[indices]`` with trainable centroids; ``strip_clustering`` removes the
    wrappers and leaves a plain model with at most ``clusters`` distinct values per kernel.

    Args:
        model: A trained Keras model (not modified).
        clusters: Number of clusters per kernel, in [2, 256].
        init: ``"kmeans++"`` (TFMOT's default), ``"linear"``, ``"density"`` or ``"random"``.
        data: A :class:`helpers.data.Dataset` to fine-tune on; ``None`` only with
            ``epochs=0``.
        epochs: Fine-tuning epochs (0 = cluster only).
        learning_rate: Adam learning rate of the fine-tuning (small: the model is trained).
        preserve_sparsity: Keep pruned zeros at zero (TFMOT's experimental
            sparsity-preserving clustering).
        batch_size: Fine-tuning batch size.
        progress: Show a progress bar while fine-tuning.

    Returns:
        The stripped, compiled model. Note that TFMOT leaves a Conv2D layer unclustered if it
        has too few weights for ``clusters``.
    """
    _validate.model(model)
    clusters = _validate_clusters(clusters)
    _validate_init(init, TFMOT_INITS)
    epochs = _validate.epochs(epochs, allow_zero=True)
    if epochs and data is None:
        raise ValueError("data must be a Dataset when epochs > 0, got None")
    _validate.learning_rate(learning_rate)
    api = tfmot.clustering.keras
    centroid_init = {"kmeans++": api.CentroidInitialization.KMEANS_PLUS_PLUS,
                     "linear": api.CentroidInitialization.LINEAR,
                     "density": api.CentroidInitialization.DENSITY_BASED,
                     "random": api.CentroidInitialization.RANDOM}[init]
    copy = keras.models.clone_model(model)  # TFMOT wraps (and alters) the layers it is given
    copy.set_weights(model.get_weights())
    wrapped = experimental.cluster_weights(copy, number_of_clusters=clusters,
                                           cluster_centroids_init=centroid_init,
                                           preserve_sparsity=preserve_sparsity)
    if epochs:
        compile_model(wrapped, learning_rate)
        train(wrapped, data, epochs=epochs, batch_size=batch_size, progress=progress)
    return compile_model(api.strip_clustering(wrapped))


def pcqat(model: keras.Model, data, epochs: int = 2, learning_rate: float = 1e-4,
          seed: int = 0, progress: bool = False, cache: bool = True) -> keras.Model:
    """Prune- and cluster-preserving QAT (TFMOT's "PCQAT" collaborative optimization).

    Plain QAT would train the zeros and the shared values away; TFMOT's
    ``Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)`` keeps the sparsity
    mask and the clusters while the weights learn the int8 rounding.

    Args:
        model: A pruned and clustered model (e.g. ``codec.deep_compression(...).model``);
            never changed.
        data: A :class:`helpers.data.Dataset` to train on.
        epochs: QAT epochs (>= 1).
        learning_rate: Adam learning rate (small: the model is already trained).
        seed: Seed of the shuffling.
        progress: Show a progress bar.
        cache: Load/store the trained weights in the course cache (keyed by the recipe and
            the input model's weights).

    Returns:
        The compiled quantization-aware model (convert it with the TFLite converter, e.g.
        ``quantization.quantize_dynamic_range``).
    """
    import tensorflow_model_optimization as tfmot  # loads TFMOT only when QAT is used

    from helpers import _validate
    from helpers.cache import cache_key, cached_model, model_digest
    from helpers.models import compile_model, train

    _validate.model(model)
    _validate.dataset(data)
    epochs = _validate.positive_int(epochs, "epochs")
    if not 0 < learning_rate < 1:
        raise ValueError(f"learning_rate must be in (0, 1), got {learning_rate}")
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
        preserve_sparsity=True)

    def build_model():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        annotated = tfmot.quantization.keras.quantize_annotate_model(copy)
        return compile_model(tfmot.quantization.keras.quantize_apply(annotated, scheme),
                             learning_rate)

    def fit(quantized):
        train(quantized, data, epochs=epochs, seed=seed, progress=progress)

    if not cache:
        quantized = build_model()
        fit(quantized)
        return quantized
    recipe = {"epochs": epochs, "learning_rate": learning_rate, "seed": seed,
              "train": len(data.x_train)}
    key = f"pcqat-{data.name}-{cache_key(recipe, model_digest(model))}"
    return cached_model(key, build_model, fit)

"""Weight clustering with TFMOT: ``cluster_weights`` + fine-tuning + ``strip_clustering``, PCQAT.

Part of :mod:`helpers.clustering`; taught in ``lessons/deeper/weight_clustering.ipynb``.
"""
from __future__ import annotations

from helpers import _validate
from helpers._tf import keras
from helpers.clustering.scratch import TFMOT_INITS, _validate_clusters, _validate_init
from helpers.models import compile_model, train

import tensorflow_model_optimization as tfmot  # noqa: E402  (after helpers._tf: Keras 2)
from tensorflow_model_optimization.python.core.clustering.keras.experimental import (  # noqa
    cluster as experimental)

__all__ = ["cluster_with_tfmot", "pcqat"]


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

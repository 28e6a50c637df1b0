"""Magnitude pruning from scratch, in NumPy: masks per tensor, per layer or global."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import _validate, models
from helpers._tf import keras
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude,  # after helpers._tf: Keras 2
)

__all__ = ["SCOPES", "PRUNABLE_TYPES", "magnitude_mask", "global_magnitude_masks",
           "prunable_layers", "magnitude_masks", "layer_sparsities", "copy_model", "apply_masks",
           "prune_low_magnitude", "sparsity_report"]


SCOPES = ("layer", "global")
PRUNABLE_TYPES = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D,
                  keras.layers.DepthwiseConv2D)


def _keep_count(size: int, sparsity: float) -> int:
    # The same float32 arithmetic as TFMOT's pruning_impl, so both keep the same count.
    kept = np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))
    return max(int(kept), 1)


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A boolean mask that keeps the largest-magnitude entries of one weight tensor.

    Magnitude pruning in three lines: rank ``|w|``, keep the top
    ``k = max(round(n * (1 - sparsity)), 1)``, zero the rest. Entries tied with the
    ``k``-th largest magnitude are kept too (TFMOT does the same).

    Args:
        weights: Any weight array (a kernel, usually).
        sparsity: Fraction of entries to remove, in [0, 1).

    Returns:
        A boolean array of the same shape: ``True`` = keep.

    Raises:
        ValueError: ``sparsity`` is outside [0, 1) or ``weights`` is empty.

    Example:
        >>> magnitude_mask(np.array([0.1, -3.0, 0.5, 2.0]), 0.5)
        array([False,  True, False,  True])
    """
    sparsity = _validate.sparsity(sparsity)
    magnitude = np.abs(np.asarray(weights, dtype=np.float32))
    if magnitude.size == 0:
        raise ValueError("weights must have at least one entry, got an empty array")
    k = _keep_count(magnitude.size, sparsity)
    threshold = np.partition(magnitude.ravel(), magnitude.size - k)[magnitude.size - k]
    return magnitude >= threshold


def global_magnitude_masks(weights: Mapping[str, np.ndarray],
                           sparsity: float) -> dict[str, np.ndarray]:
    """Masks from ONE magnitude threshold shared by several tensors.

    The smallest weights of the whole model go first, wherever they are, so each tensor
    ends up with its own sparsity: layers with many small weights lose more.

    Args:
        weights: Tensors by name (e.g. the kernels of a model).
        sparsity: Fraction of all their entries together to remove, in [0, 1).

    Returns:
        A boolean mask per name (``True`` = keep).
    """
    sparsity = _validate.sparsity(sparsity)
    if not weights:
        raise ValueError("weights must hold at least one tensor, got an empty mapping")
    magnitudes = {name: np.abs(np.asarray(w, dtype=np.float32)) for name, w in weights.items()}
    everything = np.concatenate([m.ravel() for m in magnitudes.values()])
    if everything.size == 0:
        raise ValueError("weights must have at least one entry, got only empty arrays")
    k = _keep_count(everything.size, sparsity)
    threshold = np.partition(everything, everything.size - k)[everything.size - k]
    return {name: m >= threshold for name, m in magnitudes.items()}


def _kernel(layer) -> np.ndarray:
    return (layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel).numpy()


def prunable_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose kernels can be pruned (Dense and convolutions), in order."""
    return [layer.name for layer in _validate.model(model).layers
            if isinstance(layer, PRUNABLE_TYPES)]


def _validate_layers(model: keras.Model, layers: Sequence[str] | None) -> list[str]:
    known = prunable_layers(model)
    if layers is None:
        return known
    if isinstance(layers, str):
        layers = [layers]
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}: the prunable layers of "
                         f"{model.name!r} are {', '.join(map(repr, known))}")
    if not layers:
        raise ValueError("layers must name at least one layer, got an empty list")
    return list(layers)


def magnitude_masks(model: keras.Model, sparsity: float | Mapping[str, float],
                    scope: str = "global",
                    layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Magnitude masks for the kernels of a Keras model (biases are never pruned).

    Args:
        model: A model with Dense / convolution layers.
        sparsity: One fraction in [0, 1) for all ``layers``, or a dict ``{layer: sparsity}``
            (then each named layer is pruned to its own sparsity and ``scope`` is ignored).
        scope: ``"layer"``: every layer loses the same fraction; ``"global"``: one
            threshold over all ``layers`` (small-magnitude layers lose more).
        layers: Names of the layers to prune; default all prunable layers.

    Returns:
        ``{layer name: boolean mask of its kernel}`` (``True`` = keep).

    Raises:
        ValueError: a sparsity outside [0, 1), an unknown layer or an unknown scope.
    """
    _validate.model(model)
    if isinstance(sparsity, Mapping):
        names = _validate_layers(model, list(sparsity))
        return {name: magnitude_mask(_kernel(model.get_layer(name)),
                                     _validate.sparsity(sparsity[name], f"sparsity[{name!r}]"))
                for name in names}
    sparsity = _validate.sparsity(sparsity)
    _validate.one_of(scope, "scope", SCOPES)
    kernels = {name: _kernel(model.get_layer(name)) for name in _validate_layers(model, layers)}
    if scope == "global":
        return global_magnitude_masks(kernels, sparsity)
    return {name: magnitude_mask(kernel, sparsity) for name, kernel in kernels.items()}


def layer_sparsities(masks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The fraction of zeros each mask sets (e.g. what a global threshold gives each layer)."""
    return {name: 1.0 - float(np.count_nonzero(mask)) / mask.size for name, mask in masks.items()}


def copy_model(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights (compiled like ``pretrained``)."""
    clone = keras.models.clone_model(_validate.model(model))
    clone.set_weights(model.get_weights())
    return models.compile_model(clone)


def apply_masks(model: keras.Model, masks: Mapping[str, np.ndarray]) -> keras.Model:
    """A copy of ``model`` whose kernels are multiplied by ``masks`` (the original is untouched).

    Raises:
        ValueError: a mask names an unknown layer or has the wrong shape.
    """
    _validate_layers(model, list(masks))
    pruned = copy_model(model)
    for name, mask in masks.items():
        layer = pruned.get_layer(name)
        weights = layer.get_weights()
        if np.shape(mask) != weights[0].shape:
            raise ValueError(f"mask for {name!r} must have shape {weights[0].shape}, "
                             f"got {np.shape(mask)}")
        weights[0] = weights[0] * np.asarray(mask, dtype=weights[0].dtype)
        layer.set_weights(weights)
    return pruned


def prune_low_magnitude(model: keras.Model, sparsity: float | Mapping[str, float],
                        scope: str = "global",
                        layers: Sequence[str] | None = None) -> keras.Model:
    """One-shot magnitude pruning from scratch: a copy with the smallest weights set to 0.

    No training: this is "prune after training". Arguments as in :func:`magnitude_masks`.
    """
    return apply_masks(model, magnitude_masks(model, sparsity, scope, layers))


def sparsity_report(model: keras.Model) -> pd.DataFrame:
    """Per prunable layer: kernel shape, weights, non-zeros and sparsity %, plus a total row.

    Unwraps TFMOT's pruning wrappers, so it works during pruning too.
    """
    rows = {}
    for layer in _validate.model(model).layers:
        inner = getattr(layer, "layer", layer)  # a PruneLowMagnitude wrapper holds .layer
        if not isinstance(inner, PRUNABLE_TYPES):
            continue
        kernel = _kernel(inner)
        if isinstance(layer, PruneLowMagnitude):
            kernel = kernel * layer.pruning_vars[0][1].numpy()  # what the model computes with
        rows[inner.name] = {"kernel shape": "x".join(map(str, kernel.shape)),
                            "weights": kernel.size, "nonzero": int(np.count_nonzero(kernel))}
    table = pd.DataFrame.from_dict(rows, orient="index")
    total = {"kernel shape": "", "weights": int(table["weights"].sum()),
             "nonzero": int(table["nonzero"].sum())}
    table.loc["total"] = total
    table["sparsity %"] = (100 * (1 - table["nonzero"] / table["weights"])).round(1)
    return table

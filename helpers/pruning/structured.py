"""Structured pruning: remove whole filters / neurons and return a smaller dense model."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from helpers import _validate, models
from helpers._tf import keras
from helpers.pruning.magnitude import _kernel, _validate_layers

__all__ = ["filter_norms", "prune_filters"]


# Layers that keep the channel axis as it is, so structured pruning can look through them.
_PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                 keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU,
                 keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def filter_norms(model: keras.Model, layer: str) -> np.ndarray:
    """L1 norm of each output filter (convolution) or neuron (Dense) of one layer."""
    name = _validate_layers(model, [layer])[0]
    kernel = _kernel(model.get_layer(name))
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _kept_units(model: keras.Model, name: str, fraction: float) -> np.ndarray:
    norms = filter_norms(model, name)
    remove = int(round(fraction * len(norms)))
    keep = max(len(norms) - remove, 1)
    return np.sort(np.argsort(-norms, kind="stable")[:keep])


def prune_filters(model: keras.Model, fractions: Mapping[str, float]) -> keras.Model:
    """Structured pruning: remove whole filters / neurons with the smallest L1 norm.

    Each named layer loses ``fractions[layer]`` of its outputs (at least one survives),
    and the next weight layer loses the matching inputs, so the result is a genuinely
    smaller *dense* model: fewer parameters, fewer multiply-adds, a smaller file, and
    faster on any hardware. Accuracy usually drops more than with the same number of
    weights removed one by one, so fine-tune afterwards (:func:`fine_tune`).

    Args:
        model: A Sequential model of Conv2D / Dense layers, with pooling, dropout,
            activation and Flatten layers between them.
        fractions: ``{layer name: fraction of its filters or neurons to remove}``, each
            in [0, 1). The output layer cannot be pruned (it would change the classes).

    Returns:
        A new compiled model; with all fractions 0 it computes exactly what ``model`` does.

    Raises:
        ValueError: unknown layer, fraction outside [0, 1), the output layer, or a layer
            type between two pruned layers that this function cannot slice.
    """
    _validate.sequential(model, why="prune_filters slices one chain of layers")
    if not isinstance(fractions, Mapping):
        raise ValueError(f"fractions must be a dict {{layer name: fraction}}, got {fractions!r}")
    names = _validate_layers(model, list(fractions))
    weight_layers = [layer for layer in model.layers if layer.weights]
    if weight_layers[-1].name in names:
        raise ValueError(f"cannot prune the output layer {weight_layers[-1].name!r}: "
                         f"it would change the number of outputs")
    kept = {}
    for name in names:
        layer = model.get_layer(name)
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) or isinstance(
                layer, keras.layers.Conv2DTranspose):
            raise ValueError(f"layer {name!r} is a {type(layer).__name__}; prune_filters "
                             f"handles Conv2D and Dense layers")
        kept[name] = _kept_units(model, name,
                                 _validate.sparsity(fractions[name], f"fractions[{name!r}]"))
    layers, weights, incoming, spatial = [], [], None, None
    for layer in model.layers:
        config = layer.get_config()
        values = layer.get_weights()
        if layer.weights and not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has weights "
                             f"prune_filters cannot slice; use Conv2D/Dense models")
        if isinstance(layer, keras.layers.Flatten):
            spatial = layer.input_shape[1:]
        elif not layer.weights and not isinstance(layer, _PASS_THROUGH) and incoming is not None:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) sits after a "
                             f"pruned layer and prune_filters cannot slice through it")
        if layer.weights:
            kernel, bias = values[0], values[1:]
            if incoming is not None:  # drop the inputs that came from removed units
                if spatial is not None:
                    rows = kernel.reshape(*spatial, -1)[..., incoming, :]
                    kernel = rows.reshape(-1, kernel.shape[-1])
                else:
                    kernel = np.take(kernel, incoming, axis=-2)
            incoming, spatial = None, None
            if layer.name in kept:
                keep = kept[layer.name]
                kernel, bias = kernel[..., keep], [b[keep] for b in bias]
                config["filters" if "filters" in config else "units"] = len(keep)
                incoming = keep
            values = [kernel] + bias
        layers.append(type(layer).from_config(config))
        weights.append(values)
    slim = keras.Sequential([keras.layers.InputLayer(input_shape=model.input_shape[1:])] + layers,
                            name=f"{model.name}_slim")
    for layer, values in zip(layers, weights):
        layer.set_weights(values)
    return models.compile_model(slim)

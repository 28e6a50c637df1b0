"""Efficient architectures: cheaper layers, blocks and a small search (``deeper/efficient_architectures``).

* :func:`conv_params`, :func:`conv_macs` and friends are the hand formulas for parameters and
  multiply-accumulates (MACs) of standard, depthwise and depthwise-separable convolutions;
  :func:`count_macs` applies them to a Keras model from its layers' shapes;
* :func:`mobilenet_block` (depthwise 3x3 + pointwise 1x1, Howard et al. 2017) and
  :func:`fire_block` (squeeze 1x1, then expand 1x1 and 3x3 concatenated, Iandola et al. 2016),
  and small classifiers built from them (:func:`mobilenet_style`, :func:`squeezenet_style`);
* :func:`search_candidate` builds one point of a tiny architecture search (width, depth,
  kernel size, stride) and :func:`measure_candidate` trains, quantizes to int8 and measures
  it (flash, TFLM arena, accuracy), cached;
* :func:`remove_layers` is depth pruning: a copy of a Sequential model without some layers,
  keeping the weights of the others.

Used by ``lessons/deeper/efficient_architectures.ipynb`` and (depth pruning)
``lessons/deeper/structured_pruning_and_lottery_ticket.ipynb``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers import _validate, measure, models, quantization
from helpers._tf import keras
from helpers.cache import cache_key, cached_arrays
from helpers.data import Dataset

__all__ = ["conv_params", "conv_macs", "depthwise_separable_params", "depthwise_separable_macs",
           "count_macs", "mobilenet_block", "fire_block", "mobilenet_style", "squeezenet_style",
           "search_candidate", "measure_candidate", "remove_layers"]


# ---------------------------------------------------------------------------- by hand
def conv_params(kernel: int, c_in: int, c_out: int, bias: bool = True) -> int:
    """Weights of a standard k x k convolution: ``k*k*c_in*c_out`` (+ ``c_out`` biases)."""
    kernel, c_in, c_out = (_validate.positive_int(v, n) for v, n in
                           ((kernel, "kernel"), (c_in, "c_in"), (c_out, "c_out")))
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def conv_macs(kernel: int, c_in: int, c_out: int, out_h: int, out_w: int) -> int:
    """Multiply-adds of a standard convolution: one ``k*k*c_in`` dot product per output value."""
    return conv_params(kernel, c_in, c_out, bias=False) * _validate.positive_int(out_h, "out_h") \
        * _validate.positive_int(out_w, "out_w")


def depthwise_separable_params(kernel: int, c_in: int, c_out: int, bias: bool = True) -> int:
    """Weights of depthwise k x k (one filter per input channel) + pointwise 1 x 1."""
    depthwise = conv_params(kernel, 1, 1, bias=False) * c_in + (c_in if bias else 0)
    return depthwise + conv_params(1, c_in, c_out, bias)


def depthwise_separable_macs(kernel: int, c_in: int, c_out: int, out_h: int,
                             out_w: int) -> int:
    """Multiply-adds of depthwise + pointwise: ``h*w*(k*k*c_in + c_in*c_out)``."""
    pixels = _validate.positive_int(out_h, "out_h") * _validate.positive_int(out_w, "out_w")
    return pixels * (kernel * kernel * c_in + conv_params(1, c_in, c_out, bias=False))


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one inference, from each Conv2D / DepthwiseConv2D / Dense layer's shapes."""
    total = 0
    for layer in _validate.model(model, built=True).layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = layer.output_shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * c  # depth multiplier 1
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output_shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * layer.input_shape[-1] * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


# ---------------------------------------------------------------------------- blocks
def mobilenet_block(x, filters: int, stride: int = 1, name: str = "mb"):
    """Depthwise 3x3 (stride) + ReLU, then pointwise 1x1 to ``filters`` + ReLU (MobileNet v1)."""
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu",
                                     name=f"{name}_dw")(x)
    return keras.layers.Conv2D(filters, 1, activation="relu", name=f"{name}_pw")(x)


def fire_block(x, squeeze: int, expand: int, name: str = "fire"):
    """SqueezeNet's fire module: squeeze 1x1, then expand 1x1 and 3x3, concatenated."""
    s = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    e1 = keras.layers.Conv2D(expand, 1, activation="relu", name=f"{name}_e1")(s)
    e3 = keras.layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"{name}_e3")(s)
    return keras.layers.Concatenate(name=f"{name}_concat")([e1, e3])


def _stem(input_shape, filters: int, kernel: int = 3, stride: int = 2):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu",
                            name="stem")(inputs)
    return inputs, x


def _head(inputs, x, num_classes: int, name: str) -> keras.Model:
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name=name)


def mobilenet_style(input_shape=(28, 28, 1), num_classes: int = 10,
                    filters: Sequence[int] = (16, 32, 32)) -> keras.Model:
    """A strided 3x3 stem, then one :func:`mobilenet_block` per further entry (stride 2, 1...)."""
    inputs, x = _stem(input_shape, filters[0])
    for i, n in enumerate(filters[1:]):
        x = mobilenet_block(x, n, 2 if i == 0 else 1, name=f"mb{i + 1}")
    return _head(inputs, x, num_classes, "mobilenet_style")


def squeezenet_style(input_shape=(28, 28, 1), num_classes: int = 10, stem: int = 16,
                     fires: Sequence[tuple[int, int]] = ((8, 16), (8, 16))) -> keras.Model:
    """A strided 3x3 stem, a 2x2 max pool, then one :func:`fire_block` per (squeeze, expand)."""
    inputs, x = _stem(input_shape, stem)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    for i, (squeeze, expand) in enumerate(fires):
        x = fire_block(x, squeeze, expand, name=f"fire{i + 1}")
    return _head(inputs, x, num_classes, "squeezenet_style")


# ---------------------------------------------------------------------------- search
def search_candidate(input_shape=(28, 28, 1), num_classes: int = 10, width: int = 8,
                     depth: int = 2, kernel: int = 3, stride: int = 2) -> keras.Model:
    """One point of the search: a stem (``width`` filters, ``kernel``, ``stride``), then
    ``depth - 1`` depthwise-separable blocks doubling the width (stride 2), pooling, logits."""
    width, depth = _validate.positive_int(width, "width"), _validate.positive_int(depth, "depth")
    _validate.one_of(kernel, "kernel", (3, 5))
    _validate.one_of(stride, "stride", (1, 2))
    inputs, x = _stem(input_shape, width, kernel, stride)
    for i in range(depth - 1):
        x = mobilenet_block(x, width * 2 ** (i + 1), 2, name=f"mb{i + 1}")
    return _head(inputs, x, num_classes, f"w{width}_d{depth}_k{kernel}_s{stride}")


def measure_candidate(data: Dataset, width: int, depth: int, kernel: int, stride: int,
                      epochs: int = 6, seed: int = 0, cache: bool = True) -> dict[str, float]:
    """Train a :func:`search_candidate`, convert to int8, measure it (cached).

    Returns:
        ``params``, ``macs``, ``flash_bytes`` (int8 flatbuffer), ``arena_bytes`` (minimum
        TFLM arena, measured) and ``accuracy`` (int8, LiteRT, whole test set).
    """
    from helpers import tinyml  # imported here: loads the TFLM runtime

    _validate.dataset(data)
    epochs = _validate.epochs(epochs)

    def run() -> dict[str, np.ndarray]:
        models.set_seed(seed)
        model = search_candidate(data.input_shape, data.num_classes, width, depth, kernel,
                                 stride)
        models.compile_model(model, 3e-3, epochs * models.steps_per_epoch(data))
        models.train(model, data, epochs, seed=seed, progress=False)
        flatbuffer = quantization.quantize_int8(model, data.x_train)
        return {"params": model.count_params(), "macs": count_macs(model),
                "flash_bytes": len(flatbuffer), "arena_bytes": tinyml.arena_size(flatbuffer),
                "accuracy": measure.accuracy(flatbuffer, data.x_test, data.y_test)}

    key = f"search-{data.name}-" + cache_key(width, depth, kernel, stride, epochs, seed,
                                             len(data.x_train), "v1")
    return {k: float(v) for k, v in cached_arrays(key, run, cache).items()}


# ---------------------------------------------------------------------------- depth
def remove_layers(model: keras.Model, names: Sequence[str], seed: int = 0) -> keras.Model:
    """Depth pruning: a compiled copy of a Sequential model without the named layers.

    Every other layer keeps its weights where their shapes still fit. A layer whose input
    width changed (e.g. the classifier after a removed 120 -> 84 dense layer) cannot keep
    them and starts from fresh random weights (seeded): fine-tune the result.

    Raises:
        ValueError: not Sequential, an unknown layer, or an empty list.
    """
    _validate.sequential(model, why="remove_layers drops layers from one chain")
    names = [names] if isinstance(names, str) else list(names)
    known = [layer.name for layer in model.layers]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"names must list layers of {model.name!r} ({', '.join(known)}), "
                         f"got {names!r}")
    kept = [layer for layer in model.layers if layer.name not in names]
    models.set_seed(seed)
    slim = keras.Sequential([keras.layers.InputLayer(input_shape=model.input_shape[1:])]
                            + [type(layer).from_config(layer.get_config()) for layer in kept],
                            name=f"{model.name}_shallow")
    for new, old in zip(slim.layers, kept):
        if [w.shape for w in new.get_weights()] == [w.shape for w in old.get_weights()]:
            new.set_weights(old.get_weights())
    return models.compile_model(slim)

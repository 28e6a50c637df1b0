"""Efficient architectures: cheaper layers, blocks and a small search (``deeper/efficient_architectures``).

* :func:`conv_params`, :func:`conv_macs` and friends are the hand formulas for parameters and
  multiply-accumulates (MACs) of standard, depthwise and depthwise-separable convolutions;
  :func:`count_macs` applies them to a Keras model from its layers' shapes;
* :func:`mobilenet_block` (depthwise 3x3 + pointwise 1x1, Howard et al. 2017) and
  :func:`fire_block` (squeeze 1x1, then expand 1x1 and 3x3 concatenated, Iandola et al. 2016),
  and small classifiers built from them (:func:`mobilenet_style`, :func:`squeezenet_style`);
* :func:`search_candidate` builds one point of a tiny architecture search (width, depth,
  kernel size, stride); :func:`train_and_measure` trains any model, quantizes it to int8
  and measures it (flash, TFLM arena, accuracy, latency), cached; :func:`search` does it
  over a grid and flags who fits a flash and an arena budget; :func:`budget_explorer` is
  the arena-budget slider over it;
* :func:`remove_layers` is depth pruning: a copy of a Sequential model without some layers,
  keeping the weights of the others.

Used by ``lessons/deeper/efficient_architectures.ipynb`` and (depth pruning)
``lessons/deeper/structured_pruning_and_lottery_ticket.ipynb``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import _validate, measure, models, quantization
from helpers._tf import keras
from helpers.cache import cache_key, cached_arrays
from helpers.data import Dataset

__all__ = ["conv_params", "conv_macs", "depthwise_separable_params", "depthwise_separable_macs",
           "count_macs", "latencies_ms", "mobilenet_block", "fire_block", "mobilenet_style", "squeezenet_style",
           "search_candidate", "train_and_measure", "measure_candidate", "search",
           "budget_explorer", "remove_layers"]


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


def latencies_ms(flatbuffers: Mapping[str, bytes], repeats: int = 5,
                 runs: int = 200) -> dict[str, float]:
    """Batch-1 LiteRT latency of several models, measured in turns (the fastest of ``repeats``).

    Measuring the models one after another in rounds, and keeping each model's fastest
    median, keeps a busy machine (other processes, a CPU that warms up) from making the
    first or the last model look slower than it is.
    """
    if not isinstance(flatbuffers, Mapping) or not flatbuffers:
        raise ValueError("flatbuffers must be a non-empty dict {name: TFLite bytes}")
    repeats = _validate.positive_int(repeats, "repeats")
    best = {name: float("inf") for name in flatbuffers}
    for _ in range(repeats):
        for name, flat in flatbuffers.items():
            best[name] = min(best[name], measure.latency_tflite_ms(flat, runs, warmup=20))
    return best


# ---------------------------------------------------------------------------- blocks
def _conv_bn_relu(x, filters: int, kernel: int, stride: int = 1, name: str = "conv",
                  depthwise: bool = False):
    """Convolution (no bias) + batch norm + ReLU, the unit of MobileNet; BN folds into the
    convolution when converted to TFLite, so it costs nothing on the device."""
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=name)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                                name=name)(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def mobilenet_block(x, filters: int, stride: int = 1, name: str = "mb"):
    """Depthwise 3x3 (stride), then pointwise 1x1 to ``filters``, each + BN + ReLU (MobileNet v1)."""
    x = _conv_bn_relu(x, 0, 3, stride, f"{name}_dw", depthwise=True)
    return _conv_bn_relu(x, filters, 1, 1, f"{name}_pw")


def fire_block(x, squeeze: int, expand: int, name: str = "fire"):
    """SqueezeNet's fire module: squeeze 1x1, then expand 1x1 and 3x3, concatenated."""
    s = _conv_bn_relu(x, squeeze, 1, 1, f"{name}_squeeze")
    e1 = _conv_bn_relu(s, expand, 1, 1, f"{name}_e1")
    e3 = _conv_bn_relu(s, expand, 3, 1, f"{name}_e3")
    return keras.layers.Concatenate(name=f"{name}_concat")([e1, e3])


def _stem(input_shape, filters: int, kernel: int = 3, stride: int = 2):
    inputs = keras.Input(shape=tuple(input_shape))
    return inputs, _conv_bn_relu(inputs, filters, kernel, stride, "stem")


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


def train_and_measure(name: str, build, data: Dataset, epochs: int = 5, seed: int = 0,
                      cache: bool = True) -> dict[str, float]:
    """Train ``build(input_shape, num_classes)``, convert to int8, measure it (cached by ``name``).

    Returns:
        ``params``, ``macs``, ``flash_bytes`` (int8 flatbuffer), ``arena_bytes`` (minimum
        TFLM arena, measured by bisection on the runtime), ``accuracy`` (int8, LiteRT, whole
        test set) and ``latency_ms`` (float32 TFLite, batch 1, LiteRT).
    """
    from helpers import tinyml  # imported here: loads the TFLM runtime

    _validate.dataset(data)
    epochs = _validate.epochs(epochs)
    if not callable(build):
        raise ValueError(f"build must be callable (input_shape, num_classes) -> model, "
                         f"got {type(build).__name__}")

    def run() -> dict[str, np.ndarray]:
        models.set_seed(seed)
        model = build(data.input_shape, data.num_classes)
        models.compile_model(model, 1e-2, epochs * models.steps_per_epoch(data))
        models.train(model, data, epochs, seed=seed, progress=False)
        flatbuffer = quantization.quantize_int8(model, data.x_train)
        return {"params": model.count_params(), "macs": count_macs(model),
                "flash_bytes": len(flatbuffer), "arena_bytes": tinyml.arena_size(flatbuffer),
                "accuracy": measure.accuracy(flatbuffer, data.x_test, data.y_test),
                "latency_ms": latencies_ms({"m": measure.to_tflite(model)}, 3)["m"]}

    key = f"arch-{name}-{data.name}-" + cache_key(epochs, seed, len(data.x_train), "v2")
    return {k: float(v) for k, v in cached_arrays(key, run, cache).items()}


def measure_candidate(data: Dataset, width: int, depth: int, kernel: int, stride: int,
                      epochs: int = 5, seed: int = 0, cache: bool = True) -> dict[str, float]:
    """:func:`train_and_measure` for one :func:`search_candidate` (cached)."""
    def build(shape, classes):
        return search_candidate(shape, classes, width, depth, kernel, stride)

    return train_and_measure(f"search-w{width}-d{depth}-k{kernel}-s{stride}", build, data,
                             epochs, seed, cache)


def search(data: Dataset, grid: Sequence[tuple[int, int, int, int]], epochs: int = 5,
           flash_budget: int = 20 * 1024, arena_budget: int = 5 * 1024,
           seed: int = 0) -> pd.DataFrame:
    """Measure each (width, depth, kernel, stride) of ``grid``; flag those within both budgets.

    Returns:
        One row per candidate (indexed by its name) with :func:`train_and_measure`'s columns,
        ``accuracy %``, ``flash KB``, ``arena KB`` and ``fits`` (both budgets met).
    """
    rows = {}
    for width, depth, kernel, stride in grid:
        rows[f"w{width} d{depth} k{kernel} s{stride}"] = {
            "width": width, "depth": depth, "kernel": kernel, "stride": stride,
            **measure_candidate(data, width, depth, kernel, stride, epochs, seed)}
    table = pd.DataFrame(rows).T
    table["accuracy %"] = 100 * table["accuracy"]
    table["flash KB"], table["arena KB"] = table["flash_bytes"] / 1024, table["arena_bytes"] / 1024
    table["fits"] = (table["flash_bytes"] <= flash_budget) & (table["arena_bytes"] <= arena_budget)
    return table


def budget_explorer(table: pd.DataFrame, arena_budgets_kb: Sequence[float],
                    flash_budget_kb: float = 20.0, prerender: bool = False):
    """An arena-budget slider over a :func:`search` table: who fits, and the best that does."""
    from helpers import plots, widgets  # imported here: ipywidgets only for the explorer

    budgets = {float(b): table[(table["arena KB"] <= b) & (table["flash KB"] <= flash_budget_kb)]
               for b in arena_budgets_kb}

    def setup(figure):
        ax = figure.subplots()
        plots.tradeoff(table, "arena KB", "accuracy %", "Accuracy vs measured TFLM arena", ax=ax)

    def draw(value, fitting, figure):
        ax = figure.axes[0]
        ax.axvline(value, color=plots.COLORS["accent"], alpha=0.6)
        if len(fitting):
            ax.scatter(fitting["arena KB"], fitting["accuracy %"], s=80, facecolors="none",
                       edgecolors=plots.COLORS["edge"], linewidths=2, zorder=5)
            best = fitting["accuracy %"].idxmax()
            return (f"<b>arena budget {value:.1f} KB</b>, flash budget {flash_budget_kb:.0f} KB: "
                    f"{len(fitting)} of {len(table)} fit; best <b>{best}</b> at "
                    f"<b>{fitting.loc[best, 'accuracy %']:.1f} %</b>")
        return f"<b>arena budget {value:.1f} KB</b>: no candidate fits"

    return widgets.sweep_explorer(budgets, list(budgets), draw, setup, description="arena KB",
                                  format_value=lambda b: f"{b:.1f}", prerender=prerender)


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

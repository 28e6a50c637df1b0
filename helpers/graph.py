"""Graph optimizations: batch-norm folding, operator fusion, constant folding, im2col.

Taught in ``lessons/deeper/graph_optimizations.ipynb``. What a converter does to a trained
network before it runs on a device, done here by hand so it can be checked:

* :func:`fold_batch_norm` folds a batch normalization into the convolution (or dense layer)
  before it, in NumPy; :func:`fold_batch_norms` does it for a whole ``Sequential`` model and
  returns the smaller, equivalent model;
* :func:`tf_graph_ops` lists the operations TensorFlow runs for a Keras model (the traced
  graph), :func:`tflite_ops` the operators of a TFLite flatbuffer with their fused activation
  (read from the flatbuffer schema, not from the interpreter, whose XNNPACK delegate replaces
  them by one ``DELEGATE`` node); :func:`op_counts` counts either list;
* :func:`im2col` and :func:`conv2d_as_matmul` write a convolution as one matrix multiply;
  :func:`im2col_sweep` measures the memory it costs for several kernel sizes;
* :func:`bn_cnn` builds the small Conv-BatchNorm-ReLU network the notebook trains.
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd

from helpers import _validate, measure, plots, widgets
from helpers._tf import keras, tf

__all__ = ["bn_cnn", "fold_batch_norm", "fold_batch_norms", "BOOKKEEPING_OPS", "tf_graph_ops",
           "tflite_ops", "op_counts", "im2col", "conv2d_as_matmul", "im2col_sweep",
           "latency_builtin_ms", "copy_weights_by_name", "im2col_explorer"]


def bn_cnn(input_shape=(28, 28, 1), num_classes: int = 10, filters: tuple[int, ...] = (8, 16),
           bn_after_activation: bool = False) -> keras.Model:
    """A small CNN of Conv2D - BatchNormalization - ReLU blocks (+ max pooling), Dropout, Dense.

    The convolutions have no bias (the batch norm's beta plays that role), as in ResNet or
    MobileNet. With ``bn_after_activation`` each block is Conv2D - ReLU - BatchNormalization
    instead, which a converter can no longer fold into the convolution.
    """
    layers = [keras.layers.InputLayer(input_shape=tuple(input_shape))]
    for i, n in enumerate(filters, start=1):
        conv = keras.layers.Conv2D(_validate.positive_int(n, "filters"), 3, use_bias=False,
                                   name=f"conv{i}")
        norm = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")
        relu = keras.layers.ReLU(name=f"relu{i}")
        layers += [conv, relu, norm] if bn_after_activation else [conv, norm, relu]
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
    layers += [keras.layers.Flatten(name="flatten"), keras.layers.Dropout(0.2, name="dropout"),
               keras.layers.Dense(num_classes, name="logits")]
    return keras.Sequential(layers, name="bn_cnn_post" if bn_after_activation else "bn_cnn")


# ---------------------------------------------------------------------------- batch-norm folding
def fold_batch_norm(kernel: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray,
                    beta: np.ndarray, mean: np.ndarray, variance: np.ndarray,
                    epsilon: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``BN(conv(x))`` into one convolution: the new kernel and bias.

    BN computes ``gamma * (y - mean) / sqrt(variance + epsilon) + beta``, an affine map per
    output channel, so with ``s = gamma / sqrt(variance + epsilon)``::

        kernel' = kernel * s        (scales each output channel, the last axis)
        bias'   = (bias - mean) * s + beta

    Args:
        kernel: A Conv2D or Dense kernel, output channels last.
        bias: Its bias, or ``None`` for a layer without one.
        gamma, beta, mean, variance: The batch norm's four weights, one per channel.
        epsilon: The batch norm's epsilon (Keras default 1e-3).

    Returns:
        ``(kernel, bias)`` of the folded layer.

    Raises:
        ValueError: the shapes do not match the kernel's output channels, or a variance
            is negative.
    """
    kernel = _validate.finite_array(kernel, "kernel")
    channels = kernel.shape[-1]
    bias = np.zeros(channels) if bias is None else _validate.finite_array(bias, "bias")
    params = {n: _validate.finite_array(v, n) for n, v in
              (("gamma", gamma), ("beta", beta), ("mean", mean), ("variance", variance))}
    for name, value in [("bias", bias), *params.items()]:
        if value.shape != (channels,):
            raise ValueError(f"{name} must have one value per output channel, shape "
                             f"({channels},), got {value.shape}")
    if np.any(params["variance"] < 0):
        raise ValueError("variance must be >= 0 (a batch norm's moving variance), got "
                         f"{params['variance'].min()}")
    epsilon = _validate.number(epsilon, "epsilon", 0, include_low=False)
    scale = params["gamma"] / np.sqrt(params["variance"] + epsilon)
    return kernel * scale, (bias - params["mean"]) * scale + params["beta"]


def _foldable(layer) -> bool:
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose))


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A copy of a ``Sequential`` model with every Conv2D/Dense + BatchNormalization pair folded.

    Args:
        model: A built ``keras.Sequential`` model (not changed).

    Returns:
        An equivalent model (same outputs up to float rounding in inference mode) with
        fewer layers: each folded convolution has a bias and the batch norm is gone.

    Raises:
        ValueError: not a Sequential model, or a batch norm follows a layer with an
            activation (then it cannot be folded: the activation sits in between).
    """
    model = _validate.sequential(_validate.model(model, built=True),
                                 why="batch norms are folded into the layer just before them")
    folded, layers = [], model.layers
    i = 0
    while i < len(layers):
        layer, nxt = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if _foldable(layer) and isinstance(nxt, keras.layers.BatchNormalization):
            if layer.get_config().get("activation", "linear") != "linear":
                raise ValueError(f"cannot fold {nxt.name!r} into {layer.name!r}: the layer "
                                 f"applies its activation before the batch norm; use "
                                 f"activation=None and a separate activation layer")
            weights = layer.get_weights()
            kernel, bias = fold_batch_norm(weights[0], weights[1] if layer.use_bias else None,
                                           *nxt.get_weights(), epsilon=nxt.epsilon)
            config = dict(layer.get_config(), use_bias=True)
            new = type(layer).from_config(config)
            folded.append((new, [kernel.astype(np.float32), bias.astype(np.float32)]))
            i += 2
        else:
            folded.append((type(layer).from_config(layer.get_config()), layer.get_weights()))
            i += 1
    copy = keras.Sequential([keras.layers.InputLayer(input_shape=model.input_shape[1:])]
                            + [layer for layer, _ in folded], name=f"{model.name}_folded")
    for layer, weights in folded:
        layer.set_weights(weights)
    return copy


# ---------------------------------------------------------------------------- op lists
# graph plumbing that does no arithmetic: inputs, variable reads, renames, control
BOOKKEEPING_OPS = frozenset({"Placeholder", "ReadVariableOp", "Identity", "NoOp", "Const"})


def tf_graph_ops(model: keras.Model, include_bookkeeping: bool = False) -> list[str]:
    """The operation types TensorFlow runs for one inference of a Keras model, in order.

    The model is traced as a ``tf.function`` at batch 1 (inference mode); by default the
    plumbing in :data:`BOOKKEEPING_OPS` (inputs, variable reads, constants) is left out.
    """
    model = _validate.model(model, built=True)
    spec = tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return [op.type for op in graph.get_operations()
            if include_bookkeeping or op.type not in BOOKKEEPING_OPS]


def _enum_names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def tflite_ops(flatbuffer: bytes) -> pd.DataFrame:
    """The operators of a TFLite model's main graph, in execution order.

    Returns:
        One row per operator: ``op`` (e.g. ``CONV_2D``), ``fused activation`` (``RELU``,
        ``NONE``, or ``""`` for operators without that option) and ``output`` (the output
        tensor's name, which lists the TensorFlow ops fused into it, joined by ``;``).
    """
    flatbuffer = measure.load_tflite(flatbuffer, "flatbuffer")
    schema = measure.tflite_schema()
    model = schema.Model.GetRootAs(flatbuffer, 0)
    ops, options, activations = (_enum_names(schema.BuiltinOperator),
                                 _enum_names(schema.BuiltinOptions),
                                 _enum_names(schema.ActivationFunctionType))
    graph, rows = model.Subgraphs(0), []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        activation, table = "", op.BuiltinOptions()
        option_class = getattr(schema, options.get(op.BuiltinOptionsType(), ""), None)
        if table is not None and option_class is not None:
            parsed = option_class()
            parsed.Init(table.Bytes, table.Pos)
            if hasattr(parsed, "FusedActivationFunction"):
                activation = activations[parsed.FusedActivationFunction()]
        output = graph.Tensors(op.Outputs(0)).Name().decode() if op.OutputsLength() else ""
        rows.append({"op": ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())],
                     "fused activation": activation, "output": output})
    return pd.DataFrame(rows, columns=["op", "fused activation", "output"])


def op_counts(ops) -> pd.Series:
    """How often each op appears: of a list of names, or of :func:`tflite_ops`' table."""
    names = list(ops["op"]) if isinstance(ops, pd.DataFrame) else list(ops)
    return pd.Series(Counter(names), dtype=int).sort_values(ascending=False)


# ---------------------------------------------------------------------------- im2col
def _padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(pad before, pad after, output size) along one axis, by TensorFlow's rule."""
    if padding == "valid":
        return 0, 0, (size - kernel) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def im2col(x: np.ndarray, kernel_size: int, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """Unfold every ``kernel_size x kernel_size`` patch of ``x`` into one row of a matrix.

    Args:
        x: Images, shape ``(batch, height, width, channels)``.
        kernel_size: Side of the square patch.
        stride: Step between patches.
        padding: ``"valid"`` or ``"same"`` (zeros, placed as TensorFlow places them).

    Returns:
        A ``(batch * out_h * out_w, kernel_size**2 * channels)`` matrix whose columns are
        ordered as a Keras kernel reshaped with ``kernel.reshape(-1, filters)``.
    """
    x = _validate.finite_array(x, "x", dtype=None)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (batch, height, width, channels), got {x.shape}")
    k = _validate.positive_int(kernel_size, "kernel_size")
    stride = _validate.positive_int(stride, "stride")
    padding = _validate.one_of(padding, "padding", ("valid", "same"))
    (top, bottom, out_h), (left, right, out_w) = (
        _padding(x.shape[1], k, stride, padding), _padding(x.shape[2], k, stride, padding))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"kernel_size {k} is larger than the image {x.shape[1:3]}")
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    windows = windows[:, ::stride, ::stride][:, :out_h, :out_w]  # (n, oh, ow, c, k, k)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])


def conv2d_as_matmul(layer, x: np.ndarray) -> np.ndarray:
    """A Keras ``Conv2D`` layer's output computed as ``im2col(x) @ kernel + bias``.

    Args:
        layer: A built Conv2D layer (square kernel, no dilation, one group).
        x: Its input, ``(batch, height, width, channels)``.

    Returns:
        The layer's output (with its activation), shape ``(batch, out_h, out_w, filters)``.
    """
    if not isinstance(layer, keras.layers.Conv2D) or isinstance(
            layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)):
        raise ValueError(f"layer must be a keras.layers.Conv2D, got {type(layer).__name__}")
    k, stride = layer.kernel_size, layer.strides
    if k[0] != k[1] or stride[0] != stride[1] or layer.dilation_rate != (1, 1) \
            or layer.groups != 1:
        raise ValueError(f"conv2d_as_matmul handles square kernels and strides without "
                         f"dilation or groups, got {layer.name!r} with kernel {k}, "
                         f"strides {stride}")
    weights = layer.get_weights()
    kernel = weights[0].reshape(-1, layer.filters)
    out = im2col(x, k[0], stride[0], layer.padding) @ kernel
    if layer.use_bias:
        out = out + weights[1]
    (_, _, out_h), (_, _, out_w) = (_padding(x.shape[1], k[0], stride[0], layer.padding),
                                    _padding(x.shape[2], k[0], stride[0], layer.padding))
    out = out.reshape(x.shape[0], out_h, out_w, layer.filters).astype(np.float32)
    return layer.activation(tf.constant(out)).numpy()


def im2col_sweep(kernel_sizes=(1, 3, 5, 7), image: int = 28, channels: int = 8,
                 filters: int = 16, runs: int = 20, seed: int = 0) -> pd.DataFrame:
    """What im2col costs and buys, per kernel size, for one ``image x image x channels`` input.

    Returns:
        Indexed by kernel size: ``input KB`` and ``im2col KB`` (float32 bytes of the input
        and of its patch matrix, 'same' padding), ``matrix`` (the GEMM's shape),
        ``MACs``, and the median milliseconds of ``im2col ms`` (building the matrix) and
        ``matmul ms`` (the one multiply), in NumPy.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, image, image, channels)).astype(np.float32)
    rows = {}
    for k in kernel_sizes:
        k = _validate.positive_int(k, "kernel size")
        kernel = rng.standard_normal((k * k * channels, filters)).astype(np.float32)
        patches = im2col(x, k, 1, "same")
        timings = {}
        for name, call in (("im2col ms", lambda: np.ascontiguousarray(im2col(x, k, 1, "same"))),
                           ("matmul ms", lambda: patches @ kernel)):
            times = []
            for _ in range(_validate.positive_int(runs, "runs")):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            timings[name] = 1000 * float(np.median(times))
        rows[k] = {"input KB": x.nbytes / 1024, "im2col KB": patches.size * 4 / 1024,
                   "matrix": f"{patches.shape[0]} x {patches.shape[1]} @ {kernel.shape[0]} x "
                             f"{filters}",
                   "MACs": patches.shape[0] * patches.shape[1] * filters, **timings}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("kernel size")


def latency_builtin_ms(flatbuffer: bytes, runs: int = 500, warmup: int = 20) -> float:
    """Median batch-1 latency (ms) through LiteRT's builtin kernels, without XNNPACK.

    ``helpers.measure.latency_tflite_ms`` runs the default CPU delegate (XNNPACK), which
    re-fuses some elementwise operators itself; the builtin kernels run the graph as stored,
    one operator at a time, so they show what the converter's fusion saves.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=measure.load_tflite(flatbuffer, "flatbuffer"),
                              num_threads=1, experimental_op_resolver_type=
                              OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    for _ in range(_validate.integer(warmup, "warmup", 0)):
        interpreter.invoke()
    times = []
    for _ in range(_validate.positive_int(runs, "runs")):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> keras.Model:
    """Give every layer of ``target`` the weights of the layer of the same name in ``source``.

    Used to build the same trained weights into a reordered graph (e.g. :func:`bn_cnn` with
    ``bn_after_activation``), whose latency and operators are then compared.
    """
    source, target = _validate.model(source, "source"), _validate.model(target, "target")
    names = {layer.name for layer in source.layers}
    for layer in target.layers:
        if layer.weights:
            if layer.name not in names:
                raise ValueError(f"source has no layer named {layer.name!r} to copy from "
                                 f"(its layers: {sorted(names)})")
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return target


def im2col_explorer(table: pd.DataFrame, prerender: bool = False):
    """A kernel-size slider over :func:`im2col_sweep`: input bytes vs patch-matrix bytes."""
    sizes = list(table.index)
    top = float(table["im2col KB"].max()) * 1.15

    def setup(figure):
        ax = figure.add_subplot(1, 2, 1)
        plots.new_axes("Memory: input vs im2col matrix", "kernel size", "KB (float32)", ax=ax)
        ax.plot(sizes, table["im2col KB"], "o--", color=plots.COLORS["accent"],
                label="im2col matrix")
        ax.plot(sizes, table["input KB"], "s-", color=plots.COLORS["baseline"], label="input")
        ax.set_ylim(0, top)
        ax.legend(loc="upper left")
        ax2 = figure.add_subplot(1, 2, 2)
        plots.new_axes("Time (NumPy, median)", "kernel size", "ms", ax=ax2)
        ax2.plot(sizes, table["im2col ms"], "o-", label="build im2col")
        ax2.plot(sizes, table["matmul ms"], "s-", label="one matmul")
        ax2.set_ylim(0, float(table[["im2col ms", "matmul ms"]].to_numpy().max()) * 1.2)
        ax2.legend(loc="upper left")

    def draw(k, row, figure):
        for ax in figure.axes:
            ax.axvline(k, color=plots.COLORS["edge"], lw=3, alpha=0.5)
        return (f"<b>{k}x{k}</b>: GEMM {row['matrix']}, {row['MACs']:,} MACs; im2col matrix "
                f"{row['im2col KB']:,.1f} KB = {row['im2col KB'] / row['input KB']:.0f}x the "
                f"input ({row['input KB']:.1f} KB)")

    return widgets.sweep_explorer(table, sizes, draw, setup, description="kernel size",
                                  format_value=lambda k: f"{k}x{k}", prerender=prerender)

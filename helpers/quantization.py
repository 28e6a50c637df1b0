"""Quantization: store and compute with fewer bits (taught in ``02_quantization``).

A float ``x`` is stored as a small integer ``q`` and a real number is recovered as
``x ≈ scale * (q - zero_point)``. Three layers of the same idea, from the inside out:

* **from scratch, in NumPy** (for teaching, and the reference of ``lab2_quantization``'s
  hidden tests): :func:`integer_range`, :func:`scale_zero_point`,
  :func:`quantization_params` (per-tensor or per-channel), :func:`quantize`,
  :func:`dequantize`, :func:`fake_quantize` and :func:`quantization_error`, for any bit-width
  from 2 to 16, affine (asymmetric) or symmetric;
* **on a Keras model**: :func:`fake_quantize_model` rounds every kernel to ``b`` bits (the
  weights a ``b``-bit device would hold, still stored as floats), :func:`bitwidth_sweep`
  measures error and accuracy for every bit-width (the table behind the lesson's bit-width
  explorer), :func:`qat_ste` (quantization-aware training from scratch, straight-through
  estimator) and :func:`qat_tfmot` (TFMOT's quantization-aware training, any bit-width 2-8);
* **TFLite post-training quantization** (what you would ship): :func:`quantize_dynamic_range`,
  :func:`quantize_float16` and :func:`quantize_int8` (full integer with a representative
  dataset, int8 input and output); :func:`tflite_quantized_weights` reads the int8 kernels and
  scales back out of a flatbuffer, :func:`agreement_with_tflite` checks the from-scratch
  per-channel int8 against them, :func:`size_breakdown` shows where a flatbuffer's bytes go,
  :func:`int8_size_ratios` how the float32/int8 size ratio depends on the model and the
  scales, and :func:`evaluate_tflite` measures any ``.tflite`` file (through
  ``helpers.measure``).

Conventions (the same as TFLite's): integers are signed. Affine ``b``-bit codes span
``[-2^(b-1), 2^(b-1) - 1]`` and the range is widened to include 0, so 0 is exact; symmetric
codes span ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` ("narrow range", so ``-q`` exists for every
``q``) with ``zero_point = 0`` and ``scale = max|x| / (2^(b-1) - 1)``. Per-channel means one
scale per output channel (the last axis of a Keras kernel). Rounding is NumPy's ``round``
(half to even); a converter may break exact ties the other way, so comparisons with TFLite
allow an off-by-one code on a tiny fraction of weights.

Used by ``lessons/02_quantization.ipynb``, ``solutions/lab2_quantization.ipynb`` and
``helpers.widgets.bitwidth_explorer``.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import measure
from helpers._tf import captured_output, keras, tf
from helpers._validate import dataset, positive_int
from helpers.data import Dataset
from helpers.models import augmented, compile_model, set_seed, train

MIN_BITS, MAX_BITS = 2, 16
GRANULARITIES = ("per-tensor", "per-channel")


# ---------------------------------------------------------------------------- validation
def _check_bits(bits, name: str = "bits", low: int = MIN_BITS, high: int = MAX_BITS) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or not low <= bits <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {bits!r}")
    return int(bits)


def _check_array(x, name: str = "x") -> np.ndarray:
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (no NaN or inf), got "
                         f"{int(np.sum(~np.isfinite(array)))} non-finite values")
    return array


def _check_axis(axis, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
            or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be None (per-tensor) or an integer in [{-ndim}, {ndim - 1}] "
                         f"(per-channel), got {axis!r}")
    return int(axis) % ndim


def _check_learning_rate(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"learning_rate must be in (0, 1), got {value!r}")
    return float(value)


def _check_model(model) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a Keras model, got {type(model).__name__}")
    if not model.built or not model.inputs:
        raise ValueError(f"model {model.name!r} has no input shape yet: build it (e.g. start "
                         f"it with an InputLayer) before quantizing or converting it")
    return model


# ---------------------------------------------------------------------------- from scratch
def integer_range(bits: int = 8, symmetric: bool = False) -> tuple[int, int]:
    """The smallest and largest signed ``bits``-bit code.

    Args:
        bits: Bit-width in [2, 16].
        symmetric: Drop the most negative code ("narrow range"), so the range is symmetric.

    Returns:
        ``(qmin, qmax)``: ``(-128, 127)`` for 8-bit affine, ``(-127, 127)`` for symmetric.

    Example:
        >>> integer_range(4), integer_range(4, symmetric=True)
        ((-8, 7), (-7, 7))
    """
    bits = _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if symmetric else -qmax - 1), qmax


def scale_zero_point(x_min, x_max, bits: int = 8, symmetric: bool = False):
    """Scale and zero point that map the real range ``[x_min, x_max]`` onto ``bits``-bit codes.

    The range is first widened to include 0 (so that 0, e.g. padding or a ReLU output, is
    represented exactly). Affine: ``scale = (max - min) / (qmax - qmin)`` and
    ``zero_point = round(qmin - min / scale)``, clipped to ``[qmin, qmax]``. Symmetric:
    ``scale = max(|min|, |max|) / qmax`` and ``zero_point = 0``. A range of zero width gets
    ``scale = 1``. Arrays of minima and maxima give one scale per entry (per-channel).

    Args:
        x_min: Smallest real value (a number or an array, one per channel).
        x_max: Largest real value, same shape as ``x_min``.
        bits: Bit-width in [2, 16].
        symmetric: Symmetric (zero point 0) instead of affine quantization.

    Returns:
        ``(scale, zero_point)``: a float and an int, or float64 and int64 arrays.

    Raises:
        ValueError: ``bits`` is out of range, a bound is not finite, or ``x_min > x_max``.

    Example:
        >>> scale_zero_point(-1.0, 2.0, bits=8)  # 3 / 255 per step, 0.0 is code -43
        (0.011764705882352941, -43)
    """
    bits = _check_bits(bits)
    lo, hi = _check_array(x_min, "x_min"), _check_array(x_max, "x_max")
    if lo.shape != hi.shape:
        raise ValueError(f"x_min and x_max must have the same shape, got {lo.shape} and "
                         f"{hi.shape}")
    if np.any(lo > hi):
        raise ValueError(f"x_min must be <= x_max, got x_min={x_min!r}, x_max={x_max!r}")
    qmin, qmax = integer_range(bits, symmetric)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if symmetric:
        scale = np.maximum(-lo, hi) / qmax
        scale = np.where(scale > 0, scale, 1.0)
        zero_point = np.zeros(scale.shape, dtype=np.int64)
    else:
        scale = (hi - lo) / (qmax - qmin)
        scale = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.round(qmin - lo / scale), qmin, qmax).astype(np.int64)
    if scale.ndim == 0:
        return float(scale), int(zero_point)
    return scale, zero_point


def quantization_params(x, bits: int = 8, symmetric: bool = False, axis: int | None = None):
    """Scale and zero point of a tensor, per-tensor (``axis=None``) or per-channel.

    Args:
        x: The real values (weights or activations).
        bits: Bit-width in [2, 16].
        symmetric: Symmetric (zero point 0) instead of affine quantization.
        axis: ``None`` for one scale for the whole tensor, or the channel axis for one scale
            per channel (``-1``, the output channel, for a Keras Conv2D or Dense kernel).

    Returns:
        ``(scale, zero_point)`` as in :func:`scale_zero_point`; arrays of length
        ``x.shape[axis]`` when per-channel.

    Raises:
        ValueError: ``x`` is empty or not finite, or ``bits`` or ``axis`` is out of range.
    """
    x = _check_array(x)
    axis = _check_axis(axis, x.ndim)
    if axis is None:
        return scale_zero_point(x.min(), x.max(), bits, symmetric)
    others = tuple(i for i in range(x.ndim) if i != axis)
    return scale_zero_point(x.min(axis=others), x.max(axis=others), bits, symmetric)


def _param(value, name: str, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    """A scale or zero point reshaped to broadcast against a tensor of ``shape``."""
    array = np.asarray(value, dtype=np.float64)
    if axis is None:
        if array.size != 1:
            raise ValueError(f"{name} must be one number when axis is None (per-tensor), got "
                             f"shape {array.shape}; pass axis= for per-channel values")
        return array.reshape(())
    if array.ndim > 1 or array.size not in (1, shape[axis]):
        raise ValueError(f"{name} must have one value per channel ({shape[axis]} along axis "
                         f"{axis}), got shape {array.shape}")
    view = [1] * len(shape)
    view[axis] = -1
    return array.reshape(view) if array.size > 1 else array.reshape(())


def _check_scale(scale: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"scale must be finite and > 0, got {np.ravel(scale)[:4]}"
                         f"{' ...' if scale.size > 4 else ''}")
    return scale


def _integer_dtype(bits: int):
    return np.int8 if bits <= 8 else np.int16


def quantize(x, scale, zero_point, bits: int = 8, symmetric: bool = False,
             axis: int | None = None) -> np.ndarray:
    """Real values to integer codes: ``q = clip(round(x / scale) + zero_point, qmin, qmax)``.

    Args:
        x: The real values.
        scale: Step size (> 0): one number, or one per channel along ``axis``.
        zero_point: The code of 0.0: one number, or one per channel.
        bits: Bit-width in [2, 16]; sets ``[qmin, qmax]`` (see :func:`integer_range`).
        symmetric: Use the symmetric (narrow) code range.
        axis: Channel axis of per-channel ``scale`` and ``zero_point`` (``None``: per-tensor).

    Returns:
        The codes as ``int8`` (bits <= 8) or ``int16``, same shape as ``x``.

    Raises:
        ValueError: bad ``bits``, ``axis``, non-positive ``scale`` or mismatched shapes.
    """
    bits = _check_bits(bits)
    x = _check_array(x)
    axis = _check_axis(axis, x.ndim)
    s = _check_scale(_param(scale, "scale", x.shape, axis))
    z = _param(zero_point, "zero_point", x.shape, axis)
    qmin, qmax = integer_range(bits, symmetric)
    return np.clip(np.round(x / s) + z, qmin, qmax).astype(_integer_dtype(bits))


def dequantize(q, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """Integer codes back to real values: ``x_hat = scale * (q - zero_point)`` (float32).

    Args:
        q: Integer codes.
        scale: Step size (> 0): one number, or one per channel along ``axis``.
        zero_point: The code of 0.0: one number, or one per channel.
        axis: Channel axis of per-channel ``scale`` and ``zero_point`` (``None``: per-tensor).
    """
    q = np.asarray(q)
    if q.size == 0:
        raise ValueError(f"q must not be empty, got shape {q.shape}")
    axis = _check_axis(axis, q.ndim)
    s = _check_scale(_param(scale, "scale", q.shape, axis))
    z = _param(zero_point, "zero_point", q.shape, axis)
    return (s * (q.astype(np.float64) - z)).astype(np.float32)


def fake_quantize(x, bits: int = 8, symmetric: bool = True,
                  axis: int | None = None) -> np.ndarray:
    """Quantize then dequantize: the values a ``bits``-bit model really computes with.

    Args:
        x: The real values.
        bits: Bit-width in [2, 16].
        symmetric: Symmetric (the TFLite choice for weights) or affine.
        axis: ``None`` for per-tensor, or the channel axis for per-channel scales.

    Returns:
        float32 values on the quantization grid, same shape as ``x``.
    """
    scale, zero_point = quantization_params(x, bits, symmetric, axis)
    return dequantize(quantize(x, scale, zero_point, bits, symmetric, axis), scale, zero_point,
                      axis)


def quantization_error(x, x_hat) -> dict[str, float]:
    """How far ``x_hat`` (e.g. ``fake_quantize(x)``) is from ``x``.

    Returns:
        ``mse`` (mean squared error), ``max_abs`` (largest absolute error) and ``sqnr_db``
        (signal-to-quantization-noise ratio ``10 log10(mean(x^2) / mse)``, in dB; each extra
        bit adds about 6 dB; ``inf`` when the error is zero).
    """
    x, x_hat = _check_array(x, "x"), _check_array(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {x.shape} and "
                         f"{x_hat.shape}")
    error = x - x_hat
    mse, signal = float(np.mean(error ** 2)), float(np.mean(x ** 2))
    if mse == 0:
        sqnr = float("inf")
    elif signal == 0:
        sqnr = float("-inf")  # all signal is noise
    else:
        sqnr = float(10 * np.log10(signal / mse))
    return {"mse": mse, "max_abs": float(np.max(np.abs(error))), "sqnr_db": sqnr}


# ---------------------------------------------------------------------------- Keras models
def _channel_view(layer, kernel: np.ndarray) -> np.ndarray:
    """The kernel with its output channels on the last axis (depthwise: in x multiplier)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.reshape(kernel.shape[:-2] + (-1,))
    return kernel


def _fake_quantize_kernel(layer, kernel: np.ndarray, bits: int, per_channel: bool,
                          symmetric: bool) -> np.ndarray:
    view = _channel_view(layer, kernel)
    fake = fake_quantize(view, bits, symmetric, axis=-1 if per_channel else None)
    return fake.reshape(kernel.shape)


def quantizable_layers(model: keras.Model) -> list[str]:
    """Names of the layers with a kernel (Conv2D, DepthwiseConv2D, Dense): what gets quantized."""
    return [layer.name for layer in model.layers
            if any(len(w.shape) >= 2 for w in layer.weights)]


def fake_quantize_model(model: keras.Model, bits: int = 8, per_channel: bool = True,
                        symmetric: bool = True) -> keras.Model:
    """A copy of ``model`` whose kernels are rounded to ``bits`` bits (stored as floats).

    This is weight-only post-training quantization, simulated: biases and activations stay
    float32 (TFLite keeps biases in 32 bits too), so the accuracy of the copy shows what the
    rounding of the weights alone costs.

    Args:
        model: A trained Keras model (not changed).
        bits: Bit-width of the weights in [2, 16].
        per_channel: One scale per output channel (else one per tensor).
        symmetric: Symmetric (zero point 0, TFLite's choice for weights) or affine.

    Returns:
        A compiled copy with fake-quantized kernels.

    Example:
        >>> model4 = fake_quantize_model(model, bits=4)  # doctest: +SKIP
    """
    model = _check_model(model)
    bits = _check_bits(bits)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        weights = layer.get_weights()
        if any(w.ndim >= 2 for w in weights):
            layer.set_weights([_fake_quantize_kernel(layer, w, bits, per_channel, symmetric)
                               if w.ndim >= 2 else w for w in weights])
    return compile_model(copy)


# ---------------------------------------------------------------------------- TFLite reading
# which input of an op is its weight tensor, and that tensor's output-channel axis
_WEIGHT_OPS = {"CONV_2D": (1, 0), "FULLY_CONNECTED": (1, 0), "DEPTHWISE_CONV_2D": (1, 3),
               "TRANSPOSE_CONV": (1, 0)}


def _weight_tensors(flatbuffer: bytes) -> list[dict]:
    """Constant weight tensors of conv/dense ops: name, dtype, shape, channel axis, bytes."""
    schema = measure.tflite_schema()
    model = schema.Model.GetRootAs(flatbuffer, 0)
    codes = {getattr(schema.BuiltinOperator, op): op for op in _WEIGHT_OPS}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    found, seen = [], set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            if kind is None:
                continue
            position, axis = _WEIGHT_OPS[kind]
            index = int(op.Inputs(position))
            tensor = graph.Tensors(index)
            buffer = model.Buffers(tensor.Buffer())
            if (g, index) in seen or buffer.DataLength() == 0:
                continue  # a weight computed at run time (e.g. dequantized float16)
            seen.add((g, index))
            offset = buffer._tab.Vector(buffer._tab.Offset(4))  # start of the data vector
            found.append({"name": tensor.Name().decode(), "op": kind,
                          "dtype": types[tensor.Type()], "shape": tuple(tensor.ShapeAsNumpy()),
                          "axis": axis, "offset": offset, "nbytes": buffer.DataLength()})
    return found


def tflite_quantized_weights(flatbuffer: bytes) -> dict[str, dict]:
    """The integer kernels of a quantized TFLite model, with their scales and zero points.

    TFLite stores a conv or dense kernel with its output channels first (Conv2D
    ``[out, h, w, in]``, Dense ``[out, in]``; a Keras kernel has them last).

    Args:
        flatbuffer: A TFLite model (e.g. from :func:`quantize_int8`).

    Returns:
        ``{tensor name: {"values", "scales", "zero_points", "axis", "op"}}`` for every int8
        conv/dense weight tensor; empty for a float model.
    """
    flatbuffer = measure.load_tflite(flatbuffer, "flatbuffer")
    interpreter = measure.tflite_interpreter(flatbuffer)
    details = {d["name"]: d for d in interpreter.get_tensor_details()}
    result = {}
    for tensor in _weight_tensors(flatbuffer):
        detail = details.get(tensor["name"])
        if tensor["dtype"] != "INT8" or detail is None:
            continue
        params = detail["quantization_parameters"]
        result[tensor["name"]] = {
            "values": interpreter.get_tensor(detail["index"]).copy(),
            "scales": np.asarray(params["scales"], dtype=np.float64),
            "zero_points": np.asarray(params["zero_points"], dtype=np.int64),
            "axis": int(params["quantized_dimension"]), "op": tensor["op"]}
    return result


def size_breakdown(flatbuffer: bytes) -> dict[str, int]:
    """Where the bytes of a TFLite flatbuffer go.

    Returns:
        ``weights`` (constant tensor data: kernels, biases, shapes), ``quantization
        parameters`` (4 bytes per scale, 8 per zero point, for every quantized tensor),
        ``graph and metadata`` (everything else: operators, tensor names and shapes,
        signatures, alignment) and ``total`` (the file size).
    """
    flatbuffer = measure.load_tflite(flatbuffer, "flatbuffer")
    model = measure.tflite_schema().Model.GetRootAs(flatbuffer, 0)
    weights = sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength()))
    metadata_buffers = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    weights -= sum(model.Buffers(i).DataLength() for i in metadata_buffers)
    params = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            quant = graph.Tensors(i).Quantization()
            if quant is not None:
                params += 4 * (quant.ScaleLength() + quant.MinLength() + quant.MaxLength())
                params += 8 * quant.ZeroPointLength()
    return {"weights": weights, "quantization parameters": params,
            "graph and metadata": len(flatbuffer) - weights - params, "total": len(flatbuffer)}


def int8_size_ratios(models: dict[str, keras.Model], data: Dataset,
                     num_samples: int = 200) -> pd.DataFrame:
    """How much smaller full int8 makes each model, with per-channel and per-tensor weights.

    Every model is converted to float32 and to full-int8 TFLite (calibrated on the first
    ``num_samples`` training examples) and both files are run on the test split.

    Args:
        models: ``{label: trained Keras model}``.
        data: The dataset the models were trained on.
        num_samples: Calibration examples for each int8 conversion.

    Returns:
        One row per (model, granularity): ``weights`` (parameter count), ``float32 KB``,
        ``int8 KB``, ``size ratio`` (float32 bytes / int8 bytes), ``quantization parameters
        KB`` (scales and zero points in the int8 file), ``float32 accuracy %``, ``int8
        accuracy %`` and ``accuracy drop`` (points).
    """
    data = dataset(data)
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict {label: trained Keras model}")
    rows = []
    for label, model in models.items():
        float_tflite = measure.to_tflite(_check_model(model))
        float_accuracy = 100 * measure.accuracy(float_tflite, data.x_test, data.y_test)
        for granularity in ("per-channel", "per-tensor"):
            int8 = quantize_int8(model, data.x_train, num_samples,
                                 per_channel=granularity == "per-channel")
            int8_accuracy = 100 * measure.accuracy(int8, data.x_test, data.y_test)
            rows.append({"model": label, "granularity": granularity,
                         "weights": measure.count_params(model),
                         "float32 KB": len(float_tflite) / 1024, "int8 KB": len(int8) / 1024,
                         "size ratio": len(float_tflite) / len(int8),
                         "quantization parameters KB":
                             size_breakdown(int8)["quantization parameters"] / 1024,
                         "float32 accuracy %": float_accuracy,
                         "int8 accuracy %": int8_accuracy,
                         "accuracy drop": float_accuracy - int8_accuracy})
    return pd.DataFrame(rows).set_index(["model", "granularity"])


def _keras_kernel_as_tflite(layer, kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel in TFLite's layout (output channels first; depthwise [1, h, w, c])."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return _channel_view(layer, kernel)[None]
    return np.moveaxis(kernel, -1, 0)


def agreement_with_tflite(model: keras.Model, flatbuffer: bytes, bits: int = 8) -> pd.DataFrame:
    """Compare the from-scratch symmetric per-channel quantization with a TFLite int8 model.

    For each layer with a kernel, the Keras kernel is quantized here (symmetric,
    per-channel, ``scale = max|w| / 127``) and compared with the int8 tensor and the scales
    the TFLite converter stored.

    Args:
        model: The float Keras model that was converted.
        flatbuffer: Its full-int8 TFLite conversion (:func:`quantize_int8`).
        bits: Bit-width of the from-scratch quantization (8 to match TFLite).

    Returns:
        One row per layer: ``tflite tensor``, ``weights``, ``channels``, ``same codes %``,
        ``max code difference`` and ``max scale rel. difference``.

    Raises:
        ValueError: the flatbuffer has no int8 kernel matching one of the model's layers.
    """
    model = _check_model(model)
    stored = tflite_quantized_weights(flatbuffer)
    rows = []
    for layer in model.layers:
        kernels = [w for w in layer.get_weights() if w.ndim >= 2]
        if not kernels:
            continue
        kernel = _keras_kernel_as_tflite(layer, kernels[0])
        matches = [name for name, t in stored.items() if t["values"].shape == kernel.shape
                   and re.search(rf"(^|/){re.escape(layer.name)}(/|$)", name)]
        if not matches:
            raise ValueError(f"no int8 kernel of shape {kernel.shape} for layer {layer.name!r} "
                             f"in the flatbuffer (int8 tensors: {sorted(stored)})")
        tensor = stored[matches[0]]
        axis = tensor["axis"]
        scale, _ = quantization_params(kernel, bits, symmetric=True, axis=axis)
        codes = quantize(kernel, scale, 0, bits, symmetric=True, axis=axis)
        difference = np.abs(codes.astype(np.int32) - tensor["values"].astype(np.int32))
        rows.append({"layer": layer.name, "tflite tensor": matches[0],
                     "weights": kernel.size, "channels": len(tensor["scales"]),
                     "same codes %": 100.0 * float(np.mean(difference == 0)),
                     "max code difference": int(difference.max()),
                     "max scale rel. difference": float(np.max(
                         np.abs(scale - tensor["scales"]) / tensor["scales"]))})
    return pd.DataFrame(rows).set_index("layer")


# ---------------------------------------------------------------------------- sweep
def fake_quantize_tflite(flatbuffer: bytes, bits: int, per_channel: bool = True,
                         symmetric: bool = True) -> bytes:
    """A float32 TFLite model with its conv/dense kernels fake-quantized to ``bits`` bits.

    The same rounding as :func:`fake_quantize_model`, applied to the flatbuffer's weight
    bytes in place: a fast way to evaluate many bit-widths without converting again.

    Args:
        flatbuffer: A float32 TFLite model (e.g. ``helpers.measure.to_tflite(model)``).
        bits: Bit-width in [2, 16].
        per_channel: One scale per output channel (else one per tensor).
        symmetric: Symmetric or affine.

    Returns:
        The modified flatbuffer (the input is not changed).
    """
    bits = _check_bits(bits)
    patched = bytearray(measure.load_tflite(flatbuffer, "flatbuffer"))
    tensors = [t for t in _weight_tensors(flatbuffer) if t["dtype"] == "FLOAT32"]
    if not tensors:
        raise ValueError("flatbuffer has no float32 conv/dense kernels to fake-quantize "
                         "(is it already quantized?)")
    for tensor in tensors:
        view = np.frombuffer(patched, dtype=np.float32, count=tensor["nbytes"] // 4,
                             offset=tensor["offset"]).reshape(tensor["shape"])
        fake = fake_quantize(view, bits, symmetric, tensor["axis"] if per_channel else None)
        patched[tensor["offset"]:tensor["offset"] + tensor["nbytes"]] = fake.tobytes()
    return bytes(patched)


def _tflite_kernels(flatbuffer: bytes) -> list[tuple[np.ndarray, int]]:
    return [(np.frombuffer(flatbuffer, dtype=np.float32, count=t["nbytes"] // 4,
                           offset=t["offset"]).reshape(t["shape"]), t["axis"])
            for t in _weight_tensors(flatbuffer) if t["dtype"] == "FLOAT32"]


def bitwidth_sweep(model: keras.Model | bytes, data: Dataset,
                   bits: Iterable[int] = range(2, 17),
                   granularities: Iterable[str] = GRANULARITIES) -> pd.DataFrame:
    """Weight error and test accuracy with the kernels fake-quantized to each bit-width.

    Symmetric weight quantization, per tensor and per channel; activations stay float.
    Accuracy runs through LiteRT on the float32 flatbuffer with patched weights (see
    :func:`fake_quantize_tflite`): the same numbers as :func:`fake_quantize_model`, faster.

    Args:
        model: A trained Keras model, or its float32 TFLite flatbuffer (saves a conversion).
        data: Dataset whose test split is used.
        bits: Bit-widths to try, each in [2, 16].
        granularities: Any of ``"per-tensor"`` and ``"per-channel"``.

    Returns:
        One row per (bits, granularity): ``levels`` (codes per weight), ``mse`` and
        ``sqnr_db`` over all kernels, ``accuracy`` in [0, 1] and ``accuracy drop`` in points
        against the float model, whose accuracy is in ``table.attrs["float_accuracy"]``.

    Raises:
        ValueError: a bad bit-width or granularity, or a model with no float kernels.
    """
    data = dataset(data)
    if isinstance(model, (bytes, bytearray)):
        flatbuffer = measure.load_tflite(model, "model")
    else:
        flatbuffer = measure.to_tflite(_check_model(model))
    bits = [_check_bits(b) for b in bits]
    granularities = list(granularities)
    if not bits or not granularities:
        raise ValueError(f"bits and granularities must not be empty, got {len(bits)} bit-widths "
                         f"and {len(granularities)} granularities")
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularities must be among {GRANULARITIES}, got {granularity!r}")
    kernels = _tflite_kernels(flatbuffer)
    if not kernels:
        raise ValueError("model has no float32 conv/dense kernels to fake-quantize")
    signal = np.concatenate([k.ravel() for k, _ in kernels]).astype(np.float64)
    float_accuracy = measure.accuracy(flatbuffer, data.x_test, data.y_test)
    rows = []
    for b in bits:
        for granularity in granularities:
            per_channel = granularity == "per-channel"
            fake = np.concatenate([fake_quantize(k, b, True, axis if per_channel else None)
                                   .ravel() for k, axis in kernels])
            error = quantization_error(signal, fake)
            patched = fake_quantize_tflite(flatbuffer, b, per_channel)
            accuracy = measure.accuracy(patched, data.x_test, data.y_test)
            rows.append({"bits": b, "granularity": granularity, "levels": 2 ** b - 1,
                         "mse": error["mse"], "sqnr_db": error["sqnr_db"],
                         "accuracy": accuracy,
                         "accuracy drop": 100 * (float_accuracy - accuracy)})
    table = pd.DataFrame(rows)
    table.attrs["float_accuracy"] = float_accuracy
    return table


# ---------------------------------------------------------------------------- TFLite PTQ
def _conversion_reason(error: Exception) -> str:
    text = str(error)
    for pattern in (r"'tf\.\w+' op [^\n]*", r"Custom ops: [^\n]*", r"error: ([^\n]*)"):
        found = re.search(pattern, text)
        if found:
            return found.group(found.lastindex or 0).strip()
    return (text.strip().splitlines() or [type(error).__name__])[0][:300]


def _convert(model: keras.Model, mode: str, configure: Callable) -> bytes:
    model = _check_model(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure(converter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flatbuffer, error, _ = captured_output(converter.convert)  # silence converter logs
    if error is not None:
        raise ValueError(f"TFLite cannot convert model {model.name!r} to {mode}: "
                         f"{_conversion_reason(error)}") from None
    return flatbuffer


def quantize_dynamic_range(model: keras.Model) -> bytes:
    """Dynamic-range quantization: int8 weights, float activations (no calibration data).

    Weights are stored as int8 with per-channel scales, except small tensors (under 1,024
    weights, the converter's default threshold), which stay float32; at run time, kernels
    that support it quantize activations on the fly, others dequantize the weights to float.

    Raises:
        ValueError: ``model`` is not a built Keras model, or TFLite cannot convert it.
    """
    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    return _convert(model, "dynamic-range int8", configure)


def quantize_float16(model: keras.Model) -> bytes:
    """float16 quantization: weights stored as 16-bit floats, upcast to float32 to compute.

    Raises:
        ValueError: ``model`` is not a built Keras model, or TFLite cannot convert it.
    """
    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    return _convert(model, "float16", configure)


def quantize_int8(model: keras.Model, representative_data: np.ndarray, num_samples: int = 200,
                  per_channel: bool = True, int8_io: bool = True) -> bytes:
    """Full-integer post-training quantization: int8 weights, activations, input and output.

    The converter runs the first ``num_samples`` examples of ``representative_data`` through
    the float model to measure each activation's range (calibration), then picks each
    activation's scale and zero point (affine int8) and each kernel's scales (symmetric
    int8, per channel unless ``per_channel=False``); biases become int32.

    Args:
        model: A trained Keras model.
        representative_data: Calibration inputs, shape ``(N,) + input shape``: training
            examples, never test examples.
        num_samples: How many of them to use, in ``[1, N]``.
        per_channel: One weight scale per output channel (TFLite's default) or per tensor.
        int8_io: int8 input and output (what integer-only hardware needs); else float32 in
            and out, with quantize/dequantize ops added at the ends.

    Returns:
        The int8 TFLite flatbuffer.

    Raises:
        ValueError: the data is empty or has the wrong shape, ``num_samples`` is out of
            range, or TFLite cannot convert the model to integer-only ops.
    """
    model = _check_model(model)
    x = np.asarray(representative_data, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"representative_data is empty: int8 calibration needs at least one "
                         f"example of shape {expected}")
    if tuple(x.shape[1:]) != expected:
        raise ValueError(f"representative_data must have shape (N,) + {expected}, got "
                         f"{x.shape}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or not 1 <= num_samples <= len(x):
        raise ValueError(f"num_samples must be in [1, {len(x)}], got {num_samples!r}")
    samples = x[:int(num_samples)]

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([example[None]] for example in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if not per_channel:
            converter._experimental_disable_per_channel = True

    return _convert(model, "full int8", configure)


def evaluate_tflite(model: bytes | str | Path, data: Dataset, name: str | None = None,
                    runs: int = 200) -> measure.Report:
    """Measure any TFLite model (bytes or a ``.tflite`` path) on ``data``'s test split.

    A thin wrapper over ``helpers.measure.evaluate``, which runs it through LiteRT (int8
    inputs and outputs are quantized and dequantized for you).

    Raises:
        ValueError: the path does not exist or the bytes are not a TFLite flatbuffer.
    """
    flatbuffer = measure.load_tflite(model)
    if isinstance(model, (str, Path)):
        name = name or Path(model).stem
    return measure.evaluate(flatbuffer, dataset(data), name=name, runs=runs)


# ---------------------------------------------------------------------------- QAT
def _fake_quantize_tf(weights: tf.Tensor, bits: int, per_channel: bool) -> tf.Tensor:
    """Symmetric fake quantization in TensorFlow (the same grid as :func:`fake_quantize`)."""
    qmax = float(2 ** (bits - 1) - 1)
    axes = list(range(len(weights.shape) - 1)) if per_channel else None
    bound = tf.reduce_max(tf.abs(weights), axis=axes)
    scale = tf.where(bound > 0, bound / qmax, tf.ones_like(bound))
    return tf.clip_by_value(tf.round(weights / scale), -qmax, qmax) * scale


def qat_ste(model: keras.Model, data: Dataset, bits: int = 8, epochs: int = 2,
            per_channel: bool = True, learning_rate: float = 1e-3, batch_size: int = 64,
            augment: bool = False, seed: int = 0) -> keras.Model:
    """Quantization-aware training from scratch: fine-tune with fake-quantized kernels.

    Each step rounds the float "shadow" kernels to ``bits`` bits (symmetric, like
    :func:`fake_quantize_model`), computes the loss with the rounded kernels, and applies the
    gradient to the float shadows as if rounding were the identity (the straight-through
    estimator). The network learns weights that survive rounding. Activations stay float.

    Args:
        model: A trained Keras model (not changed).
        data: Training data (``data.x_train``).
        bits: Bit-width of the kernels in [2, 16].
        epochs: Passes over the training set.
        per_channel: One scale per output channel (else one per tensor).
        learning_rate: Adam step size, in (0, 1).
        batch_size: Examples per step.
        augment: Add small random shifts and rotations (off: fine-tuning is short).
        seed: Seed for the shuffling and augmentation.

    Returns:
        A compiled copy whose kernels hold ``bits``-bit values (at most ``2^bits - 1``
        distinct values per channel).
    """
    model, data = _check_model(model), dataset(data)
    bits, epochs = _check_bits(bits), positive_int(epochs, "epochs")
    learning_rate = _check_learning_rate(learning_rate)
    batch_size = positive_int(batch_size, "batch_size")
    set_seed(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    variables = copy.trainable_variables
    shadows = [tf.Variable(v) for v in variables]
    is_kernel = [len(v.shape) >= 2 for v in variables]
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def load_rounded():
        for variable, shadow, kernel in zip(variables, shadows, is_kernel):
            variable.assign(_fake_quantize_tf(shadow, bits, per_channel) if kernel else shadow)

    @tf.function
    def step(x, y):
        load_rounded()  # forward pass with the rounded kernels ...
        with tf.GradientTape() as tape:
            loss = loss_fn(y, copy(x, training=True))
        # ... and their gradient applied to the float shadows: the straight-through estimator
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), shadows))
        return loss

    batches = (augmented(data.x_train, data.y_train, batch_size, seed) if augment else
               tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
               .shuffle(len(data.x_train), seed=seed).batch(batch_size))
    for _ in range(epochs):
        for x, y in batches:
            step(x, y)
    load_rounded()
    return compile_model(copy)


def qat_tfmot(model: keras.Model, data: Dataset, weight_bits: int = 8, activation_bits: int = 8,
              epochs: int = 2, learning_rate: float = 1e-4, augment: bool = False,
              seed: int = 0) -> keras.Model:
    """Quantization-aware training with the TensorFlow Model Optimization Toolkit.

    8/8 bits is TFMOT's standard scheme (``quantize_model``), whose result converts to an
    integer TFLite model (int8 weights and activations, float input and output) with
    ``quantize_dynamic_range``: no representative data is needed, the training learned the
    activation ranges. Other bit-widths use TFMOT's experimental
    ``DefaultNBitQuantizeScheme``: symmetric weights (per channel for convolutions, per tensor
    for Dense layers) and affine activations, all fake-quantized during training.

    Args:
        model: A trained Keras model (not changed).
        data: Training data.
        weight_bits: Bit-width of the weights in [2, 8].
        activation_bits: Bit-width of the activations in [2, 8].
        epochs: Passes over the training set (the first one also calibrates the activation
            ranges: before it the model's accuracy is meaningless).
        learning_rate: Adam step size, in (0, 1).
        augment: Add small random shifts and rotations (off: fine-tuning is short).
        seed: Seed for the shuffling and augmentation.

    Returns:
        The compiled, trained TFMOT model (layers wrapped in ``QuantizeWrapperV2``).
    """
    import tensorflow_model_optimization as tfmot

    model, data = _check_model(model), dataset(data)
    weight_bits = _check_bits(weight_bits, "weight_bits", 2, 8)
    activation_bits = _check_bits(activation_bits, "activation_bits", 2, 8)
    epochs = positive_int(epochs, "epochs")
    learning_rate = _check_learning_rate(learning_rate)
    set_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if weight_bits == activation_bits == 8:
            quantized = tfmot.quantization.keras.quantize_model(model)
        else:
            from tensorflow_model_optimization.quantization.keras.experimental.default_n_bit \
                import DefaultNBitQuantizeScheme

            scheme = DefaultNBitQuantizeScheme(num_bits_weight=weight_bits,
                                               num_bits_activation=activation_bits)
            annotated = tfmot.quantization.keras.quantize_annotate_model(model)
            quantized = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    compile_model(quantized, learning_rate)
    train(quantized, data, epochs=epochs, augment=augment, seed=seed, progress=False)
    return quantized

"""Reading a TFLite flatbuffer's weights: the int8 kernels and scales, and where the bytes go.

:func:`tflite_quantized_weights` reads the int8 kernels and scales back out of a flatbuffer,
:func:`agreement_with_tflite` checks the from-scratch per-channel int8 against them and
:func:`size_breakdown` splits a file into weights, quantization parameters and graph.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from helpers import _validate, measure
from helpers._tf import keras
from helpers.quantization.fake import _channel_view
from helpers.quantization.scratch import quantization_params, quantize

__all__ = ["tflite_quantized_weights", "size_breakdown", "agreement_with_tflite"]


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
    model = _validate.model(model, built=True)
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

"""The bit-width sweep behind lesson 02's explorer: error and accuracy for every bit-width.

The sweep's table has one column per constant below (``SQNR_DB``, ``ACCURACY``, ...); the
explorer (``helpers.widgets.bitwidth_explorer``) and the plots read them by these names.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from helpers import _validate, measure
from helpers._tf import keras
from helpers._validate import dataset
from helpers.data import Dataset
from helpers.quantization.scratch import MAX_BITS, MIN_BITS, fake_quantize, quantization_error
from helpers.quantization.tflite_weights import _weight_tensors

__all__ = ["GRANULARITIES", "BITS", "GRANULARITY", "LEVELS", "MSE", "SQNR_DB", "ACCURACY",
           "ACCURACY_DROP", "FLOAT_ACCURACY", "fake_quantize_tflite", "bitwidth_sweep"]

GRANULARITIES = ("per-tensor", "per-channel")
# the columns of bitwidth_sweep's table, and the attrs key of the float model's accuracy
BITS, GRANULARITY, LEVELS, MSE, SQNR_DB = "bits", "granularity", "levels", "mse", "sqnr_db"
ACCURACY, ACCURACY_DROP, FLOAT_ACCURACY = "accuracy", "accuracy drop", "float_accuracy"


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
    bits = _validate.integer(bits, "bits", MIN_BITS, MAX_BITS)
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
        flatbuffer = measure.to_tflite(model)
    bits = [_validate.integer(b, "bits", MIN_BITS, MAX_BITS) for b in bits]
    granularities = list(granularities)
    if not bits or not granularities:
        raise ValueError(f"bits and granularities must not be empty, got {len(bits)} bit-widths "
                         f"and {len(granularities)} granularities")
    for granularity in granularities:
        _validate.one_of(granularity, "granularities", GRANULARITIES)
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
            rows.append({BITS: b, GRANULARITY: granularity, LEVELS: 2 ** b - 1,
                         MSE: error["mse"], SQNR_DB: error["sqnr_db"], ACCURACY: accuracy,
                         ACCURACY_DROP: 100 * (float_accuracy - accuracy)})
    table = pd.DataFrame(rows)
    table.attrs[FLOAT_ACCURACY] = float_accuracy
    return table

"""TFLite post-training quantization (what you would ship), and measuring the files.

:func:`quantize_dynamic_range`, :func:`quantize_float16` and :func:`quantize_int8` (full
integer with a representative dataset) all convert through ``helpers.tflite.convert``;
:func:`evaluate_tflite` measures any ``.tflite`` file and :func:`int8_size_ratios` how the
float32/int8 size ratio depends on the model and the scales.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers import _validate, measure, tflite
from helpers._tf import keras, tf
from helpers._validate import dataset
from helpers.data import Dataset
from helpers.quantization.tflite_weights import size_breakdown

__all__ = ["quantize_dynamic_range", "quantize_float16", "quantize_int8", "evaluate_tflite",
           "int8_size_ratios"]


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

    return tflite.convert(model, "dynamic-range int8", configure)


def quantize_float16(model: keras.Model) -> bytes:
    """float16 quantization: weights stored as 16-bit floats, upcast to float32 to compute.

    Raises:
        ValueError: ``model`` is not a built Keras model, or TFLite cannot convert it.
    """
    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    return tflite.convert(model, "float16", configure)


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
    model = _validate.model(model, built=True)
    x = np.asarray(representative_data, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"representative_data is empty: int8 calibration needs at least one "
                         f"example of shape {expected}")
    if tuple(x.shape[1:]) != expected:
        raise ValueError(f"representative_data must have shape (N,) + {expected}, got "
                         f"{x.shape}")
    samples = x[:_validate.integer(num_samples, "num_samples", 1, len(x))]

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([example[None]] for example in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if not per_channel:
            converter._experimental_disable_per_channel = True

    return tflite.convert(model, "full int8", configure)


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
        float_tflite = measure.to_tflite(model)
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

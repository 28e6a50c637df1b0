"""The one Keras-to-TFLite conversion path of the kit (``tf.lite.TFLiteConverter``).

Every flatbuffer the lessons build comes from :func:`convert`: float32
(``helpers.measure.to_tflite``), sparse (``helpers.pruning.to_sparse_tflite``) and the
post-training quantizations (``helpers.quantization.quantize_*``). It checks the model first,
silences the converter's C++ logs (``helpers._tf.captured_output``) and turns a failed
conversion into a one-line ``ValueError`` that names the model, the target and the reason.

Lessons show the converter itself in a short cell (e.g. ``02_quantization``); this module is
what the helpers run.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable

from helpers import _validate
from helpers._tf import captured_output, keras, tf

__all__ = ["convert"]


def _conversion_reason(error: Exception) -> str:
    """The useful line of a converter error (the op that failed), not its MLIR dump."""
    text = str(error)
    for pattern in (r"'tf\.\w+' op [^\n]*", r"Custom ops: [^\n]*", r"error: ([^\n]*)"):
        found = re.search(pattern, text)
        if found:
            return found.group(found.lastindex or 0).strip()
    return (text.strip().splitlines() or [type(error).__name__])[0][:300]


def convert(model: keras.Model, mode: str = "float32",
            configure: Callable[[tf.lite.TFLiteConverter], None] | None = None) -> bytes:
    """Convert a built Keras model to a TFLite flatbuffer, quietly.

    Args:
        model: A built Keras model (it has an input shape).
        mode: What the conversion produces, for error messages (``"float32"``, ``"full
            int8"``, ...).
        configure: Sets the converter's options (``optimizations``,
            ``representative_dataset``, ``target_spec``, ...) before it runs; ``None``
            converts to plain float32.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: ``model`` is not a built Keras model, or TFLite cannot convert it (the
            message names the failing operation).
    """
    model = _validate.model(model, built=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if configure is not None:
        configure(converter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flatbuffer, error, _ = captured_output(converter.convert)  # silence converter logs
    if error is not None:
        raise ValueError(f"TFLite cannot convert model {model.name!r} to {mode}: "
                         f"{_conversion_reason(error)}") from None
    return flatbuffer

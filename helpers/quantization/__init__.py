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

The package is split by concern, and this module re-exports every public name, so
``from helpers import quantization; quantization.quantize_int8(...)`` works as before:
``scratch`` (NumPy), ``fake`` (a Keras model's kernels rounded), ``tflite_weights`` (reading
a flatbuffer's int8 weights and sizes), ``sweep`` (the bit-width sweep and its column names),
``ptq`` (TFLite post-training quantization) and ``qat`` (quantization-aware training).

Used by ``lessons/02_quantization.ipynb``, ``solutions/lab2_quantization.ipynb`` and
``helpers.widgets.bitwidth_explorer``.
"""
from helpers.quantization.fake import fake_quantize_model, quantizable_layers
from helpers.quantization.ptq import (evaluate_tflite, int8_size_ratios, quantize_dynamic_range,
                                      quantize_float16, quantize_int8)
from helpers.quantization.qat import qat_ste, qat_tfmot
from helpers.quantization.scratch import (MAX_BITS, MIN_BITS, dequantize, fake_quantize,
                                          integer_range, quantization_error, quantization_params,
                                          quantize, scale_zero_point)
from helpers.quantization.sweep import (ACCURACY, ACCURACY_DROP, BITS, FLOAT_ACCURACY,
                                        GRANULARITIES, GRANULARITY, LEVELS, MSE, SQNR_DB,
                                        bitwidth_sweep, fake_quantize_tflite)
from helpers.quantization.tflite_weights import (agreement_with_tflite, size_breakdown,
                                                 tflite_quantized_weights)

__all__ = [
    # from scratch (NumPy)
    "MIN_BITS", "MAX_BITS", "integer_range", "scale_zero_point", "quantization_params",
    "quantize", "dequantize", "fake_quantize", "quantization_error",
    # on a Keras model, and the bit-width sweep
    "quantizable_layers", "fake_quantize_model", "GRANULARITIES", "fake_quantize_tflite",
    "bitwidth_sweep",
    # the columns of bitwidth_sweep's table
    "BITS", "GRANULARITY", "LEVELS", "MSE", "SQNR_DB", "ACCURACY", "ACCURACY_DROP",
    "FLOAT_ACCURACY",
    # TFLite files
    "tflite_quantized_weights", "size_breakdown", "agreement_with_tflite",
    # TFLite post-training quantization
    "quantize_dynamic_range", "quantize_float16", "quantize_int8", "evaluate_tflite",
    "int8_size_ratios",
    # quantization-aware training
    "qat_ste", "qat_tfmot",
]

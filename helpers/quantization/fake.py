"""Fake quantization of a Keras model: kernels rounded to ``b`` bits, stored as floats."""
from __future__ import annotations

import numpy as np

from helpers import _validate
from helpers._tf import keras
from helpers.models import compile_model
from helpers.quantization.scratch import MAX_BITS, MIN_BITS, fake_quantize

__all__ = ["quantizable_layers", "fake_quantize_model"]


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
    model = _validate.model(model, built=True)
    bits = _validate.integer(bits, "bits", MIN_BITS, MAX_BITS)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        weights = layer.get_weights()
        if any(w.ndim >= 2 for w in weights):
            layer.set_weights([_fake_quantize_kernel(layer, w, bits, per_channel, symmetric)
                               if w.ndim >= 2 else w for w in weights])
    return compile_model(copy)

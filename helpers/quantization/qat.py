"""Quantization-aware training: from scratch (straight-through estimator) and with TFMOT."""
from __future__ import annotations

import warnings

from helpers import _validate
from helpers._tf import keras, tf
from helpers._validate import dataset, positive_int
from helpers.data import Dataset
from helpers.models import augmented, batches, compile_model, set_seed, train
from helpers.quantization.scratch import MAX_BITS, MIN_BITS

import tensorflow_model_optimization as tfmot  # noqa: E402  (after helpers._tf: Keras 2)
from tensorflow_model_optimization.quantization.keras.experimental.default_n_bit import (  # noqa
    DefaultNBitQuantizeScheme)

__all__ = ["qat_ste", "qat_tfmot"]


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
    model, data = _validate.model(model, built=True), dataset(data)
    bits = _validate.integer(bits, "bits", MIN_BITS, MAX_BITS)
    epochs = _validate.epochs(epochs)
    learning_rate = _validate.learning_rate(learning_rate)
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

    pipeline = (augmented if augment else batches)(data.x_train, data.y_train, batch_size, seed)
    for _ in range(epochs):
        for x, y in pipeline:
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
    model, data = _validate.model(model, built=True), dataset(data)
    weight_bits = _validate.integer(weight_bits, "weight_bits", 2, 8)
    activation_bits = _validate.integer(activation_bits, "activation_bits", 2, 8)
    epochs = _validate.epochs(epochs)
    learning_rate = _validate.learning_rate(learning_rate)
    set_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if weight_bits == activation_bits == 8:
            quantized = tfmot.quantization.keras.quantize_model(model)
        else:
            scheme = DefaultNBitQuantizeScheme(num_bits_weight=weight_bits,
                                               num_bits_activation=activation_bits)
            annotated = tfmot.quantization.keras.quantize_annotate_model(model)
            quantized = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    compile_model(quantized, learning_rate)
    train(quantized, data, epochs=epochs, augment=augment, seed=seed, progress=False)
    return quantized

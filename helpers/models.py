"""Model builders and the pretrained-model cache (taught in ``00_introduction``).

Every model outputs *logits* (no softmax layer), so the same model serves classification,
distillation (which needs logits) and TFLite conversion.

=================  ==========================================================  ============
builder            what                                                        params (28x28)
=================  ==========================================================  ============
``lenet5``         LeNet-5 (LeCun et al. 1998) with ReLU and max pooling       61,706
``mlp``            one hidden layer                                            19,090
``tiny_cnn``       three 3x3 convs + global average pooling (a student)        3,738
``depthwise_cnn``  depthwise-separable convs + batch norm, MobileNet style     2,954
=================  ==========================================================  ============

``pretrained(name, dataset)`` trains a model once with fixed seeds and caches its weights
(see ``helpers.cache.cache_dir``), so a lesson starts in seconds.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from helpers._tf import keras, tf
from helpers import _validate
from helpers._validate import positive_int
from helpers.cache import cache_key, cached_model, seeded
from helpers.data import Dataset, load_dataset

__all__ = ["set_seed", "lenet5", "lenet5_x4", "mlp", "tiny_cnn", "depthwise_cnn", "BUILDERS",
           "build", "compile_model", "steps_per_epoch", "ProgressBar", "batches", "augmented",
           "train", "RECIPES", "pretrained"]


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow so a notebook gives the same numbers each run.

    The seed used is ``seed + $EDGE_AI_SEED`` (see ``helpers.cache.seeded``).
    """
    keras.utils.set_random_seed(seeded(seed))


# ---------------------------------------------------------------------------- builders
def _validate_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    return shape


def lenet5(input_shape=(28, 28, 1), num_classes: int = 10, width: int = 1) -> keras.Model:
    """LeNet-5: conv(6, 5x5) - pool - conv(16, 5x5) - pool - dense 120 - 84 - classes.

    ``width`` multiplies every filter and unit count (MobileNet's width multiplier): the
    weights grow about ``width**2`` times. On 8x8 inputs (``digits``) the second conv keeps
    its size with 'same' padding.
    """
    shape = _validate_shape(input_shape)
    width = positive_int(width, "width")
    small = shape[0] < 20
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=shape),
        keras.layers.Conv2D(6 * width, 5, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16 * width, 5, padding="same" if small else "valid",
                            activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(120 * width, activation="relu", name="fc1"),
        keras.layers.Dense(84 * width, activation="relu", name="fc2"),
        keras.layers.Dense(num_classes, name="logits"),
    ], name="lenet5" if width == 1 else f"lenet5_x{width}")


def lenet5_x4(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """LeNet-5 four times wider (973K weights on MNIST): big enough that weights dominate."""
    return lenet5(input_shape, num_classes, width=4)


def mlp(input_shape=(28, 28, 1), num_classes: int = 10, hidden: int = 24) -> keras.Model:
    """A multilayer perceptron with one hidden ReLU layer of ``hidden`` units."""
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=_validate_shape(input_shape)),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dense(num_classes, name="logits"),
    ], name="mlp")


def tiny_cnn(input_shape=(28, 28, 1), num_classes: int = 10,
             filters: tuple[int, ...] = (8, 16, 16)) -> keras.Model:
    """A tiny CNN: one 3x3 conv + 2x2 max pool per entry of ``filters``, then global pooling."""
    layers = [keras.layers.InputLayer(input_shape=_validate_shape(input_shape))]
    for i, n in enumerate(filters, start=1):
        layers.append(keras.layers.Conv2D(n, 3, padding="same", activation="relu",
                                          name=f"conv{i}"))
        if i < len(filters):
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
    layers += [keras.layers.GlobalAveragePooling2D(name="gap"),
               keras.layers.Dense(num_classes, name="logits")]
    return keras.Sequential(layers, name="tiny_cnn")


def _conv_bn_relu(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """A convolution without bias, then batch norm and ReLU (the unit of MobileNet; BN folds
    into the convolution when converted to TFLite)."""
    return [layer, keras.layers.BatchNormalization(momentum=0.9, name=f"{layer.name}_bn"),
            keras.layers.ReLU(name=f"{layer.name}_relu")]


def depthwise_cnn(input_shape=(28, 28, 1), num_classes: int = 10,
                  filters: tuple[int, ...] = (16, 32, 32)) -> keras.Model:
    """MobileNet-style CNN: a 3x3 conv, then depthwise 3x3 + pointwise 1x1 blocks, each
    convolution followed by batch norm and ReLU."""
    layers = [keras.layers.InputLayer(input_shape=_validate_shape(input_shape)),
              *_conv_bn_relu(keras.layers.Conv2D(filters[0], 3, padding="same",
                                                 use_bias=False, name="conv1")),
              keras.layers.MaxPooling2D(2, name="pool1")]
    for i, n in enumerate(filters[1:], start=2):
        layers += [*_conv_bn_relu(keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                                               name=f"dw{i}")),
                   *_conv_bn_relu(keras.layers.Conv2D(n, 1, use_bias=False, name=f"pw{i}"))]
        if i < len(filters):
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
    layers += [keras.layers.GlobalAveragePooling2D(name="gap"),
               keras.layers.Dense(num_classes, name="logits")]
    return keras.Sequential(layers, name="depthwise_cnn")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "lenet5": lenet5, "lenet5_x4": lenet5_x4, "mlp": mlp, "tiny_cnn": tiny_cnn,
    "depthwise_cnn": depthwise_cnn,
}


def build(name: str, input_shape=(28, 28, 1), num_classes: int = 10, **kwargs) -> keras.Model:
    """Build an untrained model by name (see ``BUILDERS``)."""
    if name not in BUILDERS:
        raise ValueError(f"Unknown model {name!r}. Choose one of {', '.join(BUILDERS)}.")
    return BUILDERS[name](input_shape, num_classes, **kwargs)


# ---------------------------------------------------------------------------- training
def compile_model(model: keras.Model, learning_rate: float = 1e-3,
                  decay_steps: int | None = None) -> keras.Model:
    """Compile for integer labels and logits: Adam, sparse cross-entropy, accuracy.

    With ``decay_steps`` the learning rate follows a cosine decay from ``learning_rate`` to
    zero over that many steps (use ``epochs * steps_per_epoch(data, batch_size)``): a recipe
    that converges ends in the same place on every machine, where a constant rate ends
    wherever its last epoch lands.
    """
    rate = learning_rate if decay_steps is None else keras.optimizers.schedules.CosineDecay(
        learning_rate, positive_int(decay_steps, "decay_steps"))
    model.compile(optimizer=keras.optimizers.Adam(rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def steps_per_epoch(data: Dataset, batch_size: int = 64) -> int:
    """Gradient steps in one pass over ``data.x_train``."""
    return -(-len(data.x_train) // positive_int(batch_size, "batch_size"))


class ProgressBar(keras.callbacks.Callback):
    """One tqdm bar over epochs, showing loss and accuracy (a widget in Jupyter)."""

    def __init__(self, epochs: int, description: str = "training"):
        super().__init__()
        self.epochs, self.description, self.bar = epochs, description, None

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.epochs, desc=self.description, unit="epoch", leave=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in (logs or {}).items()}, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


def batches(x: np.ndarray, y: np.ndarray, batch_size: int = 64, seed: int = 0) -> tf.data.Dataset:
    """Shuffled batches of arrays in memory: the input pipeline of the kit's own training loops.

    tf.data's autotuning is off, as in every pipeline Keras builds here (see ``helpers._tf``):
    its thread kept finished iterators alive, and trainings sharing the CPU idle.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
            .batch(positive_int(batch_size, "batch_size")).with_options(options))


def augmented(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0,
              shift: float = 0.1, rotation: float = 0.05) -> tf.data.Dataset:
    """Shuffled batches with small random shifts and rotations (helps small models)."""
    augment = keras.Sequential([keras.layers.RandomTranslation(shift, shift, seed=seed),
                                keras.layers.RandomRotation(rotation, seed=seed + 1)])
    return batches(x, y, batch_size, seed).map(lambda a, b: (augment(a, training=True), b))


def train(model: keras.Model, data: Dataset, epochs: int = 10, batch_size: int = 64,
          augment: bool = False, seed: int = 0, progress: bool = True,
          callbacks: list | None = None) -> keras.callbacks.History:
    """Fit a compiled model on ``data.x_train`` with fixed seeds and a progress bar.

    Args:
        model: A compiled Keras model (see :func:`compile_model`).
        data: The dataset to train on.
        epochs: Passes over the training set.
        batch_size: Examples per gradient step.
        augment: Add small random shifts/rotations (see :func:`augmented`).
        seed: Seed for weight init, shuffling and augmentation.
        progress: Show a progress bar.
        callbacks: Extra Keras callbacks (e.g. TFMOT's ``UpdatePruningStep``).
    """
    epochs = _validate.epochs(epochs)
    set_seed(seed)
    callbacks = list(callbacks or [])
    if progress:
        callbacks.append(ProgressBar(epochs, f"training {model.name}"))
    if augment:
        return model.fit(augmented(data.x_train, data.y_train, batch_size, seeded(seed)),
                         epochs=epochs, verbose=0, callbacks=callbacks)
    return model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                     shuffle=True, verbose=0, callbacks=callbacks)


# ---------------------------------------------------------------------------- pretrained
RECIPES: dict[str, dict] = {
    # name: training recipe used by pretrained(); changing one retrains (it is in the cache
    # key). "schedule": "cosine" decays the learning rate to zero over all epochs, so the
    # run converges instead of ending wherever its last constant-rate epoch lands.
    "lenet5": {"epochs": 60, "batch_size": 64, "learning_rate": 2e-3, "augment": True,
               "schedule": "cosine"},
    "lenet5_x4": {"epochs": 15, "batch_size": 64, "learning_rate": 2e-3, "augment": True,
                  "schedule": "cosine"},
    "mlp": {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3, "augment": False,
            "schedule": "cosine"},
    "tiny_cnn": {"epochs": 30, "batch_size": 64, "learning_rate": 3e-3, "augment": True,
                 "schedule": "cosine"},
    # without batch norm, 30 epochs left seeds 0-2 at 82.2 / 78.2 / 89.7 % (std 5.8) and 60 at
    # 90.8 / 88.2 / 92.1 % (std 2.0); with batch norm after every convolution, 60 epochs give
    # 95.1 / 95.5 / 95.5 % (std 0.23; benchmark --baselines depthwise_cnn, 7 Dec 2026)
    "depthwise_cnn": {"epochs": 60, "batch_size": 64, "learning_rate": 3e-3, "augment": True,
                      "schedule": "cosine"},
}
SCHEDULES = ("constant", "cosine")


def compile_for_recipe(model: keras.Model, recipe: dict, data: Dataset) -> keras.Model:
    """Compile ``model`` with a recipe's learning rate and schedule (see ``RECIPES``)."""
    schedule = recipe.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    decay = (recipe["epochs"] * steps_per_epoch(data, recipe["batch_size"])
             if schedule == "cosine" else None)
    return compile_model(model, recipe["learning_rate"], decay)


def pretrained(name: str = "lenet5", dataset: str | Dataset = "mnist5k", seed: int = 0,
               progress: bool = True) -> keras.Model:
    """A trained, compiled model; trained once with fixed seeds, then loaded from the cache.

    Args:
        name: A model in ``BUILDERS`` (``"lenet5"``, ``"mlp"``, ``"tiny_cnn"``, ...).
        dataset: A dataset name or an already loaded :class:`Dataset`.
        seed: Seed of the training run (different seeds give different models).
        progress: Show a progress bar while training.

    Returns:
        A new compiled Keras model each call (changing it never changes the cache).
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown model {name!r}. Choose one of {', '.join(RECIPES)}.")
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    recipe = RECIPES[name]
    key = f"{name}-{data.name}-seed{seed}-{cache_key(recipe, data.input_shape)}"

    def build_model():
        set_seed(seed)
        model = build(name, data.input_shape, data.num_classes)
        return compile_for_recipe(model, recipe, data)

    def fit(model):
        train(model, data, recipe["epochs"], recipe["batch_size"], recipe["augment"], seed,
              progress)

    return cached_model(key, build_model, fit)

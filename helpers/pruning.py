"""Pruning: remove the weights, neurons or filters that matter least (taught in ``01_pruning``).

Three layers of the same idea, from the inside out:

* **from scratch, in NumPy** (for teaching): :func:`magnitude_mask` keeps the largest
  ``|w|`` of one tensor, :func:`global_magnitude_masks` uses one threshold for many tensors;
  :func:`magnitude_masks` and :func:`prune_low_magnitude` apply them to a Keras model, per
  layer or with a global threshold, and return masks you can inspect or a pruned copy;
* **with TFMOT** (what you would ship): :func:`pruning_schedule` (``ConstantSparsity`` or
  ``PolynomialDecay``), :func:`prune_with_tfmot` (wraps each layer with its own sparsity),
  :func:`fine_tune` (trains with ``UpdatePruningStep``, then strips the wrappers with
  ``strip_pruning``) and :func:`prune_and_fine_tune` (all of it, cached);
* **structured** pruning: :func:`prune_filters` removes whole filters / neurons with the
  smallest L1 norm and returns a genuinely smaller dense model.

:func:`sparsity_report` shows, per layer, how many weights are left; :func:`sparsity_sweep`
measures accuracy and file sizes over a range of sparsities (the data behind the lesson's
plot and ``helpers.widgets.sparsity_explorer``).

The NumPy masks use TFMOT's rule, so they can be checked against it: keep the
``k = max(round(n * (1 - sparsity)), 1)`` largest magnitudes (ties at the threshold are kept).
Used by ``lessons/01_pruning.ipynb`` and ``solutions/lab1_pruning.ipynb``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers import _validate, measure, models, tflite
from helpers._tf import keras, tf
from helpers._validate import dataset, positive_int
from helpers.cache import cache_key, cached_arrays, cached_model, model_digest
from helpers.data import Dataset

import tensorflow_model_optimization as tfmot  # noqa: E402  (after helpers._tf: Keras 2)
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa
    PruneLowMagnitude,
)

__all__ = ["SCOPES", "SCHEDULES", "PRUNABLE_TYPES", "magnitude_mask", "global_magnitude_masks",
           "prunable_layers", "magnitude_masks", "layer_sparsities", "copy_model", "apply_masks",
           "prune_low_magnitude", "sparsity_report", "pruning_schedule", "prune_with_tfmot",
           "is_wrapped", "strip_pruning", "fine_tune", "prune_and_fine_tune", "to_sparse_tflite",
           "tflite_ops", "filter_norms", "prune_filters", "SparsitySweep", "sparsity_sweep",
           "SPARSITY", "SPARSITY_MEASURED", "ACCURACY_ONE_SHOT", "ACCURACY_FINE_TUNED",
           "TFLITE_BYTES", "TFLITE_GZIP_BYTES"]

_sparsity_api = tfmot.sparsity.keras
SCOPES = ("layer", "global")
SCHEDULES = ("constant", "polynomial")
PRUNABLE_TYPES = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D,
                  keras.layers.DepthwiseConv2D)
# Layers that keep the channel axis as it is, so structured pruning can look through them.
_PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                 keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU,
                 keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


# ---------------------------------------------------------------------------- from scratch
def _keep_count(size: int, sparsity: float) -> int:
    # The same float32 arithmetic as TFMOT's pruning_impl, so both keep the same count.
    kept = np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))
    return max(int(kept), 1)


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A boolean mask that keeps the largest-magnitude entries of one weight tensor.

    Magnitude pruning in three lines: rank ``|w|``, keep the top
    ``k = max(round(n * (1 - sparsity)), 1)``, zero the rest. Entries tied with the
    ``k``-th largest magnitude are kept too (TFMOT does the same).

    Args:
        weights: Any weight array (a kernel, usually).
        sparsity: Fraction of entries to remove, in [0, 1).

    Returns:
        A boolean array of the same shape: ``True`` = keep.

    Raises:
        ValueError: ``sparsity`` is outside [0, 1) or ``weights`` is empty.

    Example:
        >>> magnitude_mask(np.array([0.1, -3.0, 0.5, 2.0]), 0.5)
        array([False,  True, False,  True])
    """
    sparsity = _validate.sparsity(sparsity)
    magnitude = np.abs(np.asarray(weights, dtype=np.float32))
    if magnitude.size == 0:
        raise ValueError("weights must have at least one entry, got an empty array")
    k = _keep_count(magnitude.size, sparsity)
    threshold = np.partition(magnitude.ravel(), magnitude.size - k)[magnitude.size - k]
    return magnitude >= threshold


def global_magnitude_masks(weights: Mapping[str, np.ndarray],
                           sparsity: float) -> dict[str, np.ndarray]:
    """Masks from ONE magnitude threshold shared by several tensors.

    The smallest weights of the whole model go first, wherever they are, so each tensor
    ends up with its own sparsity: layers with many small weights lose more.

    Args:
        weights: Tensors by name (e.g. the kernels of a model).
        sparsity: Fraction of all their entries together to remove, in [0, 1).

    Returns:
        A boolean mask per name (``True`` = keep).
    """
    sparsity = _validate.sparsity(sparsity)
    if not weights:
        raise ValueError("weights must hold at least one tensor, got an empty mapping")
    magnitudes = {name: np.abs(np.asarray(w, dtype=np.float32)) for name, w in weights.items()}
    everything = np.concatenate([m.ravel() for m in magnitudes.values()])
    if everything.size == 0:
        raise ValueError("weights must have at least one entry, got only empty arrays")
    k = _keep_count(everything.size, sparsity)
    threshold = np.partition(everything, everything.size - k)[everything.size - k]
    return {name: m >= threshold for name, m in magnitudes.items()}


def _kernel(layer) -> np.ndarray:
    return (layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel).numpy()


def prunable_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose kernels can be pruned (Dense and convolutions), in order."""
    return [layer.name for layer in _validate.model(model).layers
            if isinstance(layer, PRUNABLE_TYPES)]


def _validate_layers(model: keras.Model, layers: Sequence[str] | None) -> list[str]:
    known = prunable_layers(model)
    if layers is None:
        return known
    if isinstance(layers, str):
        layers = [layers]
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}: the prunable layers of "
                         f"{model.name!r} are {', '.join(map(repr, known))}")
    if not layers:
        raise ValueError("layers must name at least one layer, got an empty list")
    return list(layers)


def magnitude_masks(model: keras.Model, sparsity: float | Mapping[str, float],
                    scope: str = "global",
                    layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Magnitude masks for the kernels of a Keras model (biases are never pruned).

    Args:
        model: A model with Dense / convolution layers.
        sparsity: One fraction in [0, 1) for all ``layers``, or a dict ``{layer: sparsity}``
            (then each named layer is pruned to its own sparsity and ``scope`` is ignored).
        scope: ``"layer"``: every layer loses the same fraction; ``"global"``: one
            threshold over all ``layers`` (small-magnitude layers lose more).
        layers: Names of the layers to prune; default all prunable layers.

    Returns:
        ``{layer name: boolean mask of its kernel}`` (``True`` = keep).

    Raises:
        ValueError: a sparsity outside [0, 1), an unknown layer or an unknown scope.
    """
    _validate.model(model)
    if isinstance(sparsity, Mapping):
        names = _validate_layers(model, list(sparsity))
        return {name: magnitude_mask(_kernel(model.get_layer(name)),
                                     _validate.sparsity(sparsity[name], f"sparsity[{name!r}]"))
                for name in names}
    sparsity = _validate.sparsity(sparsity)
    _validate.one_of(scope, "scope", SCOPES)
    kernels = {name: _kernel(model.get_layer(name)) for name in _validate_layers(model, layers)}
    if scope == "global":
        return global_magnitude_masks(kernels, sparsity)
    return {name: magnitude_mask(kernel, sparsity) for name, kernel in kernels.items()}


def layer_sparsities(masks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The fraction of zeros each mask sets (e.g. what a global threshold gives each layer)."""
    return {name: 1.0 - float(np.count_nonzero(mask)) / mask.size for name, mask in masks.items()}


def copy_model(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights (compiled like ``pretrained``)."""
    clone = keras.models.clone_model(_validate.model(model))
    clone.set_weights(model.get_weights())
    return models.compile_model(clone)


def apply_masks(model: keras.Model, masks: Mapping[str, np.ndarray]) -> keras.Model:
    """A copy of ``model`` whose kernels are multiplied by ``masks`` (the original is untouched).

    Raises:
        ValueError: a mask names an unknown layer or has the wrong shape.
    """
    _validate_layers(model, list(masks))
    pruned = copy_model(model)
    for name, mask in masks.items():
        layer = pruned.get_layer(name)
        weights = layer.get_weights()
        if np.shape(mask) != weights[0].shape:
            raise ValueError(f"mask for {name!r} must have shape {weights[0].shape}, "
                             f"got {np.shape(mask)}")
        weights[0] = weights[0] * np.asarray(mask, dtype=weights[0].dtype)
        layer.set_weights(weights)
    return pruned


def prune_low_magnitude(model: keras.Model, sparsity: float | Mapping[str, float],
                        scope: str = "global",
                        layers: Sequence[str] | None = None) -> keras.Model:
    """One-shot magnitude pruning from scratch: a copy with the smallest weights set to 0.

    No training: this is "prune after training". Arguments as in :func:`magnitude_masks`.
    """
    return apply_masks(model, magnitude_masks(model, sparsity, scope, layers))


def sparsity_report(model: keras.Model) -> pd.DataFrame:
    """Per prunable layer: kernel shape, weights, non-zeros and sparsity %, plus a total row.

    Unwraps TFMOT's pruning wrappers, so it works during pruning too.
    """
    rows = {}
    for layer in _validate.model(model).layers:
        inner = getattr(layer, "layer", layer)  # a PruneLowMagnitude wrapper holds .layer
        if not isinstance(inner, PRUNABLE_TYPES):
            continue
        kernel = _kernel(inner)
        if isinstance(layer, PruneLowMagnitude):
            kernel = kernel * layer.pruning_vars[0][1].numpy()  # what the model computes with
        rows[inner.name] = {"kernel shape": "x".join(map(str, kernel.shape)),
                            "weights": kernel.size, "nonzero": int(np.count_nonzero(kernel))}
    table = pd.DataFrame.from_dict(rows, orient="index")
    total = {"kernel shape": "", "weights": int(table["weights"].sum()),
             "nonzero": int(table["nonzero"].sum())}
    table.loc["total"] = total
    table["sparsity %"] = (100 * (1 - table["nonzero"] / table["weights"])).round(1)
    return table


# ---------------------------------------------------------------------------- TFMOT
def pruning_schedule(kind: str, sparsity: float, end_step: int, initial_sparsity: float = 0.0,
                     frequency: int = 10) -> _sparsity_api.PruningSchedule:
    """A TFMOT pruning schedule, validated.

    Args:
        kind: ``"constant"``: prune to ``sparsity`` at step 0 and keep it (one shot, then
            recover); ``"polynomial"``: raise sparsity from ``initial_sparsity`` to
            ``sparsity`` along a cubic curve until ``end_step``, then hold (gentler).
        sparsity: Target fraction of zeros, in [0, 1).
        end_step: Step where the polynomial ramp ends (ignored by ``"constant"``). TFMOT
            updates the masks only on multiples of ``frequency``, so a ramp ending between
            two updates never reaches its target; ``end_step`` is therefore rounded down to
            a multiple of ``frequency`` (and must be at least ``frequency``).
        initial_sparsity: Start of the polynomial ramp, in [0, 1).
        frequency: Masks are recomputed every ``frequency`` training steps.

    Raises:
        ValueError: unknown ``kind``, a sparsity outside [0, 1), ``frequency`` < 1, or
            ``end_step`` < ``frequency``.
    """
    _validate.one_of(kind, "kind", SCHEDULES)
    sparsity = _validate.sparsity(sparsity)
    initial_sparsity = _validate.sparsity(initial_sparsity, "initial_sparsity")
    end_step = positive_int(end_step, "end_step")
    frequency = positive_int(frequency, "frequency")
    if kind == "constant":
        return _sparsity_api.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    if end_step < frequency:
        raise ValueError(f"end_step must be >= frequency ({frequency}), got {end_step}")
    return _sparsity_api.PolynomialDecay(min(initial_sparsity, sparsity), sparsity,
                                         begin_step=0, end_step=end_step - end_step % frequency,
                                         frequency=frequency)


def prune_with_tfmot(model: keras.Model, sparsity: float | Mapping[str, float],
                     schedule: str = "polynomial", end_step: int = 100,
                     scope: str = "global", layers: Sequence[str] | None = None,
                     frequency: int = 10) -> keras.Model:
    """Wrap the layers of a COPY of ``model`` in TFMOT's ``prune_low_magnitude``.

    TFMOT applies one schedule to the whole model; here each layer gets its own target so
    that small layers can be spared. With ``scope="global"`` the per-layer targets are
    what one global magnitude threshold gives each layer today (see
    :func:`magnitude_masks`); TFMOT then keeps each layer at its target while training.

    Returns:
        A compiled model with ``PruneLowMagnitude`` wrappers: train it with
        :func:`fine_tune` (which adds ``UpdatePruningStep``) and strip it afterwards.
    """
    _validate.model(model)
    if isinstance(sparsity, Mapping):
        names = _validate_layers(model, list(sparsity))
        targets = {name: _validate.sparsity(sparsity[name], f"sparsity[{name!r}]")
                   for name in names}
    elif _validate.one_of(scope, "scope", SCOPES) == "layer":
        targets = {name: _validate.sparsity(sparsity) for name in _validate_layers(model, layers)}
    else:
        targets = layer_sparsities(magnitude_masks(model, sparsity, "global", layers))
    schedules = {name: pruning_schedule(schedule, target, end_step, frequency=frequency)
                 for name, target in targets.items()}
    copy = copy_model(model)  # TFMOT wraps layers in place: never touch the caller's model

    def wrap(layer):
        if layer.name in schedules:
            return _sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedules[layer.name])
        return layer

    return models.compile_model(keras.models.clone_model(copy, clone_function=wrap))


def is_wrapped(model: keras.Model) -> bool:
    """True if any layer of ``model`` carries a TFMOT pruning wrapper."""
    return any(isinstance(layer, PruneLowMagnitude) for layer in model.layers)


def strip_pruning(model: keras.Model) -> keras.Model:
    """TFMOT's ``strip_pruning``: the plain model with the sparse weights, as a compiled copy.

    Call it after training and before export: the wrappers' masks and step counters are
    training-only state (they would double the weights in a saved file).
    """
    return copy_model(_sparsity_api.strip_pruning(_validate.model(model)))


def _copy_any(model: keras.Model) -> keras.Model:
    """A weight-for-weight copy of any Sequential/functional model, wrapped or not."""
    with _sparsity_api.prune_scope():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def fine_tune(model: keras.Model, data: Dataset, epochs: int = 4, learning_rate: float = 1e-3,
              batch_size: int = 64, augment: bool = False, seed: int = 0, cache: bool = True,
              progress: bool = True) -> keras.Model:
    """Train a copy of ``model`` a little longer and return it (wrappers stripped).

    The learning rate stays constant: with the polynomial ramp over the first half of a
    short fine-tuning, a cosine decay left too little to recover with (the digits MLP, 80 %
    sparsity, 3 epochs: 83.3 % against 85.6 % one-shot, seed 0). Compare the result with
    :func:`fine_tune_dense_control`, which gets the same extra training. For a model from
    :func:`prune_with_tfmot` this adds TFMOT's ``UpdatePruningStep`` callback (it advances
    the schedule and re-applies the masks; training without it raises an error) and calls
    ``strip_pruning`` at the end. A plain model (e.g. from :func:`prune_filters`) is simply
    trained.

    Args:
        model: The model to fine-tune; never changed.
        data: Its training split is used.
        epochs: Passes over the training data.
        learning_rate: Adam's step size.
        batch_size: Examples per step.
        augment: Add small random shifts and rotations (see ``helpers.models.augmented``).
        seed: Seed for shuffling.
        cache: Keep the result in the model cache (keyed by a hash of the model, its weights,
            the data and this recipe), so the next call returns in a second.
        progress: Show a progress bar while training.

    Returns:
        A compiled, plain Keras model.
    """
    _validate.model(model)
    dataset(data)
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    _validate.learning_rate(learning_rate)
    wrapped = is_wrapped(model)

    def train_copy() -> keras.Model:
        work = models.compile_model(_copy_any(model), learning_rate)
        callbacks = [_sparsity_api.UpdatePruningStep()] if wrapped else []
        models.train(work, data, epochs, batch_size, augment, seed, progress, callbacks)
        return strip_pruning(work) if wrapped else work

    if not cache:
        return train_copy()
    recipe = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
              "augment": bool(augment), "seed": seed, "data": data.name,
              "train": len(data.x_train)}
    key = f"finetune-{model.name}-{data.name}-{cache_key(recipe, model_digest(model))}"
    architecture = _sparsity_api.strip_pruning(_copy_any(model)) if wrapped else model
    return cached_model(
        key, lambda: models.compile_model(keras.models.clone_model(architecture)),
        lambda target: target.set_weights(train_copy().get_weights()))


def fine_tune_dense_control(model: keras.Model, data: Dataset, epochs: int = 4,
                            learning_rate: float = 1e-3, batch_size: int = 64,
                            augment: bool = False, seed: int = 0, cache: bool = True,
                            progress: bool = True) -> keras.Model:
    """The fair control for a fine-tuned compressed model: the dense model, fine-tuned alike.

    Fine-tuning is more training, and more training alone can move accuracy. Train the
    *unpruned* model with exactly the recipe the pruned one got (same epochs, learning rate,
    batch size, augmentation and seed; pass the same arguments as to
    :func:`prune_and_fine_tune`) and compare the pruned model with both: the baseline says
    what compression cost, this control says what the extra epochs alone gave.

    Args:
        model: A trained dense (not wrapped) model; never changed.
        data, epochs, learning_rate, batch_size, augment, seed, cache, progress: As in
            :func:`fine_tune`.

    Returns:
        A compiled, plain Keras model with the architecture of ``model``.
    """
    if is_wrapped(_validate.model(model)):
        raise ValueError("the control must be the dense model: pass the model before "
                         "prune_with_tfmot, not the wrapped one")
    return fine_tune(model, data, epochs, learning_rate, batch_size, augment, seed, cache,
                     progress)


def prune_and_fine_tune(model: keras.Model, data: Dataset,
                        sparsity: float | Mapping[str, float], epochs: int = 4,
                        schedule: str = "polynomial", scope: str = "global",
                        layers: Sequence[str] | None = None, ramp: float = 0.5,
                        learning_rate: float = 1e-3, batch_size: int = 64,
                        augment: bool = False, seed: int = 0, cache: bool = True,
                        progress: bool = True) -> keras.Model:
    """Prune with TFMOT while fine-tuning, then strip: the whole recipe in one call.

    Args:
        model: A trained model; never changed.
        data: Training data for the fine-tuning.
        sparsity, scope, layers: As in :func:`magnitude_masks`.
        epochs: Fine-tuning epochs.
        schedule: ``"polynomial"`` (ramp up to the target) or ``"constant"`` (prune at once).
        ramp: Fraction of the fine-tuning steps the polynomial ramp lasts, in (0, 1].
        learning_rate, batch_size, augment, seed, cache, progress: As in :func:`fine_tune`.

    Returns:
        A plain, compiled model whose kernels have the requested sparsity.
    """
    dataset(data)
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    _validate.number(ramp, "ramp", 0, 1, include_low=False)
    steps = epochs * int(np.ceil(len(data.x_train) / batch_size))
    wrapped = prune_with_tfmot(model, sparsity, schedule, max(10, int(ramp * steps)), scope,
                               layers)
    return fine_tune(wrapped, data, epochs, learning_rate, batch_size, augment, seed, cache,
                     progress)


# ---------------------------------------------------------------------------- sparse files
def to_sparse_tflite(model: keras.Model) -> bytes:
    """A float32 TFLite flatbuffer that stores sparse kernels in a compressed sparse format.

    Uses the converter's ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``: the file shrinks, but
    the runtime adds a ``DENSIFY`` op per sparse tensor that rebuilds the dense weights when
    the model loads, so memory use and speed are those of the dense model (see
    :func:`tflite_ops`).
    """
    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]

    return tflite.convert(model, "sparse float32", configure)


def tflite_ops(flatbuffer: bytes) -> list[str]:
    """The operators of a TFLite model, in execution order (e.g. ``CONV_2D``, ``DENSIFY``)."""
    interpreter = measure.tflite_interpreter(flatbuffer)
    return [op["op_name"] for op in interpreter._get_ops_details()]


# ---------------------------------------------------------------------------- structured
def filter_norms(model: keras.Model, layer: str) -> np.ndarray:
    """L1 norm of each output filter (convolution) or neuron (Dense) of one layer."""
    name = _validate_layers(model, [layer])[0]
    kernel = _kernel(model.get_layer(name))
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _kept_units(model: keras.Model, name: str, fraction: float) -> np.ndarray:
    norms = filter_norms(model, name)
    remove = int(round(fraction * len(norms)))
    keep = max(len(norms) - remove, 1)
    return np.sort(np.argsort(-norms, kind="stable")[:keep])


def prune_filters(model: keras.Model, fractions: Mapping[str, float]) -> keras.Model:
    """Structured pruning: remove whole filters / neurons with the smallest L1 norm.

    Each named layer loses ``fractions[layer]`` of its outputs (at least one survives),
    and the next weight layer loses the matching inputs, so the result is a genuinely
    smaller *dense* model: fewer parameters, fewer multiply-adds, a smaller file, and
    faster on any hardware. Accuracy usually drops more than with the same number of
    weights removed one by one, so fine-tune afterwards (:func:`fine_tune`).

    Args:
        model: A Sequential model of Conv2D / Dense layers, with pooling, dropout,
            activation and Flatten layers between them.
        fractions: ``{layer name: fraction of its filters or neurons to remove}``, each
            in [0, 1). The output layer cannot be pruned (it would change the classes).

    Returns:
        A new compiled model; with all fractions 0 it computes exactly what ``model`` does.

    Raises:
        ValueError: unknown layer, fraction outside [0, 1), the output layer, or a layer
            type between two pruned layers that this function cannot slice.
    """
    _validate.sequential(model, why="prune_filters slices one chain of layers")
    if not isinstance(fractions, Mapping):
        raise ValueError(f"fractions must be a dict {{layer name: fraction}}, got {fractions!r}")
    names = _validate_layers(model, list(fractions))
    weight_layers = [layer for layer in model.layers if layer.weights]
    if weight_layers[-1].name in names:
        raise ValueError(f"cannot prune the output layer {weight_layers[-1].name!r}: "
                         f"it would change the number of outputs")
    kept = {}
    for name in names:
        layer = model.get_layer(name)
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) or isinstance(
                layer, keras.layers.Conv2DTranspose):
            raise ValueError(f"layer {name!r} is a {type(layer).__name__}; prune_filters "
                             f"handles Conv2D and Dense layers")
        kept[name] = _kept_units(model, name,
                                 _validate.sparsity(fractions[name], f"fractions[{name!r}]"))
    layers, weights, incoming, spatial = [], [], None, None
    for layer in model.layers:
        config = layer.get_config()
        values = layer.get_weights()
        if layer.weights and not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has weights "
                             f"prune_filters cannot slice; use Conv2D/Dense models")
        if isinstance(layer, keras.layers.Flatten):
            spatial = layer.input_shape[1:]
        elif not layer.weights and not isinstance(layer, _PASS_THROUGH) and incoming is not None:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) sits after a "
                             f"pruned layer and prune_filters cannot slice through it")
        if layer.weights:
            kernel, bias = values[0], values[1:]
            if incoming is not None:  # drop the inputs that came from removed units
                if spatial is not None:
                    rows = kernel.reshape(*spatial, -1)[..., incoming, :]
                    kernel = rows.reshape(-1, kernel.shape[-1])
                else:
                    kernel = np.take(kernel, incoming, axis=-2)
            incoming, spatial = None, None
            if layer.name in kept:
                keep = kept[layer.name]
                kernel, bias = kernel[..., keep], [b[keep] for b in bias]
                config["filters" if "filters" in config else "units"] = len(keep)
                incoming = keep
            values = [kernel] + bias
        layers.append(type(layer).from_config(config))
        weights.append(values)
    slim = keras.Sequential([keras.layers.InputLayer(input_shape=model.input_shape[1:])] + layers,
                            name=f"{model.name}_slim")
    for layer, values in zip(layers, weights):
        layer.set_weights(values)
    return models.compile_model(slim)


# ---------------------------------------------------------------------------- sweeps
@dataclass
class SparsitySweep:
    """Accuracy and sizes measured at several sparsities (one row per sparsity).

    Attributes:
        table: Indexed by ``sparsity`` (fraction); columns ``accuracy one-shot`` (pruned,
            no training), ``accuracy fine-tuned``, ``tflite bytes``, ``tflite gzip bytes``
            (of the fine-tuned model) and ``sparsity measured``.
        edges: Histogram bin edges for the kernel weights (weights beyond them are counted
            in the end bins).
        dense_counts: Histogram of the original model's kernel weights.
        counts: One histogram per row of the non-zero kernel weights after fine-tuning.
        baseline_accuracy: Accuracy of the unpruned model.
    """

    table: pd.DataFrame
    edges: np.ndarray
    dense_counts: np.ndarray
    counts: np.ndarray
    baseline_accuracy: float


def _all_kernels(model: keras.Model) -> np.ndarray:
    return np.concatenate([_kernel(model.get_layer(name)).ravel()
                           for name in prunable_layers(model)])


def sparsity_sweep(model: keras.Model, data: Dataset,
                   sparsities: Sequence[float] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
                   epochs: int = 4, schedule: str = "polynomial", scope: str = "global",
                   bins: int = 81, cache: bool = True, progress: bool = True) -> SparsitySweep:
    """Prune ``model`` to each sparsity, with and without fine-tuning, and measure it.

    Each point: one-shot magnitude pruning (:func:`prune_low_magnitude`, no training) and
    :func:`prune_and_fine_tune` (TFMOT); accuracy of both on ``data.x_test``; the fine-tuned
    model's TFLite file and its gzip; a histogram of its surviving weights. Fine-tuning
    dominates the cost (seconds per point), so with ``cache=True`` the fine-tuned weights
    and the measured table are cached (keyed by a hash of the model, data and recipe): the
    first call computes everything with this code, later calls load it.

    Returns:
        A :class:`SparsitySweep`.
    """
    _validate.model(model)
    dataset(data)
    points = [_validate.sparsity(s, f"sparsities[{i}]") for i, s in enumerate(sparsities)]
    if not points or sorted(set(points)) != points:
        raise ValueError(f"sparsities must be increasing and distinct, got {list(sparsities)}")
    bins = positive_int(bins, "bins")
    epochs = positive_int(epochs, "epochs")
    _validate.one_of(schedule, "schedule", SCHEDULES)
    _validate.one_of(scope, "scope", SCOPES)
    recipe = {"sparsities": points, "epochs": epochs, "schedule": schedule, "scope": scope,
              "bins": bins, "data": data.name, "model": model_digest(model), "version": 2}
    key = f"sweep-{model.name}-{data.name}-{cache_key(recipe)}"
    return _sweep_from_arrays(cached_arrays(
        key, lambda: _measure_sweep(model, data, points, epochs, schedule, scope, bins, cache,
                                    progress), cache))


def _measure_sweep(model, data, points, epochs, schedule, scope, bins, cache, progress):
    dense = _all_kernels(model)
    limit = 1.25 * float(np.abs(dense).max())  # fine-tuning can grow weights a little
    edges = np.linspace(-limit, limit, bins + 1)
    rows, counts = [], []
    for s in points:
        one_shot = prune_low_magnitude(model, s, scope)
        tuned = model if s == 0 else prune_and_fine_tune(
            model, data, s, epochs, schedule, scope, cache=cache, progress=progress)
        flatbuffer = measure.to_tflite(tuned)
        survivors = _all_kernels(tuned)
        rows.append([s, measure.accuracy(one_shot, data.x_test, data.y_test),
                     measure.accuracy(tuned, data.x_test, data.y_test), len(flatbuffer),
                     measure.gzip_bytes(flatbuffer), measure.sparsity(tuned)])
        survivors = np.clip(survivors[survivors != 0], edges[0], edges[-1])  # count them all
        counts.append(np.histogram(survivors, edges)[0])
    arrays = {"rows": np.array(rows, dtype=np.float64), "edges": edges,
              "dense_counts": np.histogram(dense, edges)[0], "counts": np.array(counts),
              "baseline_accuracy": np.array(measure.accuracy(model, data.x_test, data.y_test))}
    return arrays


# The columns of SparsitySweep.table (indexed by SPARSITY); helpers.widgets reads them by name.
SPARSITY, SPARSITY_MEASURED = "sparsity", "sparsity measured"
ACCURACY_ONE_SHOT, ACCURACY_FINE_TUNED = "accuracy one-shot", "accuracy fine-tuned"
TFLITE_BYTES, TFLITE_GZIP_BYTES = "tflite bytes", "tflite gzip bytes"
_SWEEP_COLUMNS = [SPARSITY, ACCURACY_ONE_SHOT, ACCURACY_FINE_TUNED, TFLITE_BYTES,
                  TFLITE_GZIP_BYTES, SPARSITY_MEASURED]


def _sweep_from_arrays(arrays) -> SparsitySweep:
    table = pd.DataFrame(arrays["rows"], columns=_SWEEP_COLUMNS).set_index(SPARSITY)
    table = table.astype({TFLITE_BYTES: int, TFLITE_GZIP_BYTES: int})
    return SparsitySweep(table, np.asarray(arrays["edges"]), np.asarray(arrays["dense_counts"]),
                         np.asarray(arrays["counts"]), float(arrays["baseline_accuracy"]))

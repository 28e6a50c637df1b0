"""Dynamic model loading: early exits, partial network evaluation, stages loaded on demand.

Taught in ``lessons/deeper/dynamic_model_loading.ipynb``.

* :func:`early_exit_lenet` builds a LeNet-like network with an exit head after its first
  block; :func:`train_early_exit` trains both exits jointly (cached).
* :func:`stage_macs` counts the multiply-accumulates each part costs; :func:`exit_probabilities`
  and :func:`threshold_sweep` measure, on a test set, accuracy against the average compute
  actually spent for each confidence threshold; :func:`threshold_explorer` is its slider.
* :func:`split_stages` cuts the trained network into two TFLite flatbuffers (stage 1 with the
  early exit, stage 2 with the rest); :class:`StagedClassifier` loads stage 2 from its file only
  when stage 1 is not confident, and counts every byte it reads from disk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers import _validate, cache, measure, models, plots, widgets
from helpers._tf import keras

__all__ = ["STAGE1", "EXIT1", "STAGE2", "early_exit_lenet", "train_early_exit", "stage_macs",
           "exit_probabilities", "threshold_sweep", "threshold_explorer", "split_stages",
           "CountingFile", "StagedClassifier"]

STAGE1 = ["conv1", "pool1"]                                  # the early block
EXIT1 = ["exit1_flatten", "exit1"]                            # the early exit's head
STAGE2 = ["conv2", "pool2", "flatten", "fc1", "fc2", "logits"]  # the rest of LeNet-5


def early_exit_lenet(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """LeNet-5 with a second output: a linear classifier on the first block's feature maps.

    Outputs ``[exit1, logits]`` (both logits). The layer names are :data:`STAGE1`,
    :data:`EXIT1` and :data:`STAGE2`.
    """
    num_classes = _validate.integer(num_classes, "num_classes", 2)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    features = keras.layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1")(inputs)
    features = keras.layers.MaxPooling2D(2, name="pool1")(features)
    early = keras.layers.Flatten(name="exit1_flatten")(features)
    early = keras.layers.Dense(num_classes, name="exit1")(early)
    x = keras.layers.Conv2D(16, 5, activation="relu", name="conv2")(features)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(84, activation="relu", name="fc2")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, [early, logits], name="early_exit_lenet")


def train_early_exit(data, epochs: int = 4, exit_weight: float = 0.5, seed: int = 0):
    """The early-exit LeNet, started from the cached LeNet-5 (``helpers.models.pretrained``)
    and fine-tuned jointly on ``data`` (loss: exit_weight * CE(exit1) + CE(final)) with a
    cosine-decayed learning rate; trained once per recipe, then cached."""
    data = _validate.dataset(data)
    epochs = _validate.epochs(epochs)
    exit_weight = _validate.number(exit_weight, "exit_weight", 0.0, 10.0)
    recipe = {"epochs": epochs, "exit_weight": exit_weight, "batch_size": 64, "lr": 1e-3,
              "init": "lenet5"}
    key = f"early_exit_lenet-{data.name}-seed{seed}-{cache.cache_key(recipe, data.input_shape)}"

    def build():
        keras.utils.set_random_seed(cache.seeded(seed))
        return early_exit_lenet(data.input_shape, data.num_classes)

    def fit(model):
        lenet = models.pretrained("lenet5", data, seed=seed, progress=False)
        for name in STAGE1 + STAGE2:
            model.get_layer(name).set_weights(lenet.get_layer(name).get_weights())
        steps = epochs * int(np.ceil(len(data.x_train) / 64))
        schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.Adam(schedule), loss=[loss, loss],
                      loss_weights=[exit_weight, 1.0])
        model.fit(data.x_train, [data.y_train, data.y_train], epochs=epochs, batch_size=64,
                  verbose=0, shuffle=True)
    return cache.cached_model(key, build, fit)


def _layer_macs(layer) -> int:
    if isinstance(layer, keras.layers.Conv2D):
        h, w, c_out = layer.output_shape[1:]
        kh, kw, c_in, _ = layer.kernel.shape
        return int(h * w * c_out * kh * kw * c_in)
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    return 0


def stage_macs(model: keras.Model) -> dict[str, int]:
    """Multiply-accumulates per input of ``stage1``, ``exit1`` and ``stage2``, and their sum."""
    model = _validate.model(model, built=True)
    macs = {name: sum(_layer_macs(model.get_layer(n)) for n in names)
            for name, names in (("stage1", STAGE1), ("exit1", EXIT1), ("stage2", STAGE2))}
    return {**macs, "total": sum(macs.values())}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def exit_probabilities(model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of the early exit and of the final exit on a batch."""
    model = _validate.model(model, built=True)
    early, final = model.predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
    return _softmax(early), _softmax(final)


def threshold_sweep(early: np.ndarray, final: np.ndarray, labels: np.ndarray,
                    macs: dict[str, int], thresholds) -> pd.DataFrame:
    """For each confidence threshold: who exits early, accuracy, and the compute spent.

    An input leaves at the early exit when its top probability is at least the threshold;
    every input pays stage 1 and the exit head, the others also stage 2.

    Returns:
        A ``DataFrame`` indexed by threshold: ``exit %``, ``accuracy %``, ``± SE``,
        ``MACs`` (average per input) and ``MACs %`` (of always running both stages).
    """
    early, final = np.asarray(early), np.asarray(final)
    labels = np.asarray(labels)
    if early.shape != final.shape or len(early) != len(labels) or len(labels) == 0:
        raise ValueError(f"early, final and labels must describe the same inputs, got shapes "
                         f"{early.shape}, {final.shape} and {labels.shape}")
    rows = {}
    for threshold in thresholds:
        threshold = _validate.number(threshold, "threshold", 0.0, 1.0)
        leaves = early.max(axis=1) >= threshold
        predicted = np.where(leaves, early.argmax(1), final.argmax(1))
        accuracy = float(np.mean(predicted == labels))
        spent = macs["stage1"] + macs["exit1"] + (1 - leaves.mean()) * macs["stage2"]
        rows[threshold] = {"exit %": 100 * leaves.mean(), "accuracy %": 100 * accuracy,
                           "± SE": 100 * measure.standard_error(accuracy, len(labels)),
                           "MACs": spent, "MACs %": 100 * spent / macs["total"]}
    return pd.DataFrame(rows).T.rename_axis("threshold")


def threshold_explorer(sweep: pd.DataFrame, final_accuracy: float, prerender: bool = False):
    """A confidence-threshold slider: accuracy against the average compute spent.

    ``final_accuracy`` (in %) is the final exit alone, drawn as the reference line.
    """
    if not isinstance(sweep, pd.DataFrame) or not {"accuracy %", "MACs %"} <= set(sweep):
        raise ValueError("sweep must be the DataFrame from early_exit.threshold_sweep")

    def setup(figure):
        ax = figure.add_subplot(1, 1, 1)
        plots.new_axes("Early exit: accuracy against compute spent", "average MACs (% of full)",
                       "test accuracy (%)", ax=ax)
        ax.plot(sweep["MACs %"], sweep["accuracy %"], "o-", color=plots.COLORS["edge"])
        ax.axhline(final_accuracy, color=plots.COLORS["baseline"], ls="--",
                   label="final exit only (100 % of MACs)")
        ax.legend(loc="lower right")
        low = min(sweep["accuracy %"].min(), final_accuracy)
        ax.set_xlim(0, 105)
        ax.set_ylim(low - 1, max(sweep["accuracy %"].max(), final_accuracy) + 0.5)

    def draw(threshold, row, figure):
        figure.axes[0].scatter([row["MACs %"]], [row["accuracy %"]], s=250, facecolors="none",
                               edgecolors=plots.COLORS["accent"], linewidths=2)
        return (f"threshold {threshold:.2f}: {row['exit %']:.1f} % of inputs leave early; "
                f"accuracy {row['accuracy %']:.1f} % ± {row['± SE']:.1f}; "
                f"{row['MACs %']:.0f} % of the full network's MACs")

    return widgets.sweep_explorer(sweep, list(sweep.index), draw, setup, "threshold",
                                  format_value=lambda t: f"{t:.2f}", prerender=prerender)


def split_stages(model: keras.Model) -> tuple[bytes, bytes]:
    """Cut the early-exit network into two TFLite flatbuffers.

    Stage 1 maps an image to ``[pool1 features, exit1 logits]``; stage 2 maps the pool1
    features to the final logits. Stage 2 reuses the trained layers, so stage 1 then stage 2
    computes exactly the full network.
    """
    model = _validate.model(model, built=True)
    features = model.get_layer(STAGE1[-1]).output
    stage1 = keras.Model(model.input, [features, model.get_layer(EXIT1[-1]).output],
                         name="stage1")
    inputs = keras.Input(shape=features.shape[1:], name="features")
    x = inputs
    for name in STAGE2:
        x = model.get_layer(name)(x)
    stage2 = keras.Model(inputs, x, name="stage2")
    return measure.to_tflite(stage1), measure.to_tflite(stage2)


class CountingFile:
    """Reads a file and counts every byte read (the storage traffic a device would see)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"path must be an existing file, got {str(path)!r}")
        self.bytes_read, self.reads = 0, 0

    def read(self) -> bytes:
        """The whole file; adds its length to ``bytes_read``."""
        with open(self.path, "rb") as handle:
            content = handle.read()
        self.bytes_read += len(content)
        self.reads += 1
        return content


class StagedClassifier:
    """Stage 1 always in memory; stage 2 read from its file only when stage 1 is unsure.

    Args:
        stage1_path, stage2_path: The two ``.tflite`` files from :func:`split_stages`.
        threshold: Confidence (top softmax probability) at which stage 1's answer is taken.
        keep_stage2: Keep stage 2 in memory once loaded (``False``: free it after each use,
            as a device with no room for both stages must, and read it again next time).
    """

    def __init__(self, stage1_path, stage2_path, threshold: float, keep_stage2: bool = True):
        self.threshold = _validate.number(threshold, "threshold", 0.0, 1.0)
        self.stage1_file, self.stage2_file = CountingFile(stage1_path), CountingFile(stage2_path)
        self.keep_stage2, self.stage2_runs = keep_stage2, 0
        self._stage1 = measure.tflite_interpreter(self.stage1_file.read())
        self._stage2 = None

    @property
    def bytes_read(self) -> int:
        """Model bytes read from storage so far (both files)."""
        return self.stage1_file.bytes_read + self.stage2_file.bytes_read

    def _run(self, interpreter, value: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], value)
        interpreter.invoke()
        return [interpreter.get_tensor(out["index"]) for out in interpreter.get_output_details()]

    def predict(self, image: np.ndarray) -> tuple[int, int]:
        """(predicted class, exit used: 1 or 2) for one image (H, W, C)."""
        outputs = self._run(self._stage1, np.asarray(image, np.float32)[None])
        features = next(o for o in outputs if o.ndim == 4)
        probabilities = _softmax(next(o for o in outputs if o.ndim == 2)[0])
        if probabilities.max() >= self.threshold:
            return int(probabilities.argmax()), 1
        stage2 = self._stage2 or measure.tflite_interpreter(self.stage2_file.read())
        self._stage2 = stage2 if self.keep_stage2 else None
        self.stage2_runs += 1
        return int(self._run(stage2, features)[0][0].argmax()), 2

"""The honest meter: size, sparsity, accuracy and latency, measured (every lesson uses it).

Sizes are real byte counts of real files: the Keras file, the TFLite flatbuffer, and the gzip
of each (gzip shows what pruning buys: zeros compress, but a dense flatbuffer stores them).
Latency is batch-1, the edge case, as the median of many runs, through LiteRT (the runtime a
device would use) and through a compiled Keras call (``model.predict`` on one sample mostly
measures its own ~40 ms of overhead, so we never time that).

``evaluate(model, data, name)`` measures everything at once and returns a :class:`Report`;
``compare(reports)`` turns a list of them into one table.
"""
from __future__ import annotations

import gzip
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from helpers import _validate, tflite
from helpers._tf import keras, tf
from helpers.cache import cache_key, cached_arrays, model_digest
from helpers.data import Dataset

# after helpers._tf, which configures TensorFlow before anything loads it
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from tensorflow.lite.python import schema_py_generated  # noqa: E402

__all__ = ["TFLITE_FILE_ID", "count_params", "count_nonzero", "kernels", "sparsity", "to_tflite",
           "keras_bytes", "gzip_bytes", "load_tflite", "tflite_schema", "tflite_interpreter",
           "predict_tflite", "predict", "accuracy", "classification_metrics", "median_ms",
           "latency_tflite_ms", "latency_keras_ms", "Report", "evaluate", "tflite_weight_counts",
           "compare", "standard_error", "Spread", "spread", "paired_drop", "describe_drop"]

TFLITE_FILE_ID = b"TFL3"  # the flatbuffer file identifier of every .tflite file (bytes 4-8)


# ---------------------------------------------------------------------------- counting
def count_params(model: keras.Model) -> int:
    """Number of weights (trainable and not) in a Keras model."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def count_nonzero(weights) -> int:
    """Non-zero entries of a Keras model's weights, or of one array."""
    arrays = weights.get_weights() if _validate.is_model(weights) else [weights]
    return int(sum(np.count_nonzero(np.asarray(a)) for a in arrays))


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """The prunable weight tensors (kernels, ndim >= 2) of a model, by weight name.

    A name without its layer (``strip_clustering`` names every kernel ``kernel:0``) gets the
    layer's name in front, so no kernel hides another.
    """
    found = {}
    for layer in _validate.model(model).layers:
        for w in layer.weights:
            if len(w.shape) >= 2:
                found[w.name if "/" in w.name else f"{layer.name}/{w.name}"] = w.numpy()
    return found


def sparsity(weights) -> float:
    """Fraction of zeros: of one array, or of all kernels (not biases) of a Keras model."""
    if _validate.is_model(weights):
        arrays = list(kernels(weights).values())
    else:
        arrays = [np.asarray(weights)]
    total = sum(a.size for a in arrays)
    if total == 0:
        raise ValueError("sparsity of an empty tensor is undefined (it has no entries)")
    return 1.0 - sum(np.count_nonzero(a) for a in arrays) / total


# ---------------------------------------------------------------------------- bytes
def to_tflite(model: keras.Model) -> bytes:
    """Convert a Keras model to a float32 TFLite flatbuffer (no optimizations).

    The flatbuffer is stored in the course cache under the model's content (architecture,
    layer names and weights) and TensorFlow's version, so converting the same model again
    (the cached baseline in every lab submission, a hidden test that checks a student's sizes)
    reads a file instead of converting (about 0.9 CPU-seconds for LeNet-5).

    Raises:
        ValueError: ``model`` is not a built Keras model, or TFLite cannot convert it.
    """
    _validate.model(model, built=True)
    try:
        key = cache_key("float32 flatbuffer", model_digest(model, names=True), tf.__version__)
    except Exception:  # e.g. a subclassed model: no config to hash, so nothing to store
        return tflite.convert(model, "float32")
    stored = cached_arrays(key, lambda: {
        "flatbuffer": np.frombuffer(tflite.convert(model, "float32"), np.uint8)})
    return stored["flatbuffer"].tobytes()


def _keras_file(model: keras.Model) -> bytes:
    """The model as a ``.keras`` file: architecture and weights, no optimizer state.

    A compiled model's file would also hold its optimizer's slots (Adam's two per weight,
    three times the size) once it has trained, so the same weights would measure differently
    fresh from training and loaded from the cache; an uncompiled copy is saved instead.
    """
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except Exception:  # a subclassed model cannot be cloned: save it as it is
        copy = model
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        copy.save(path)
        return path.read_bytes()


def keras_bytes(model: keras.Model) -> int:
    """Size of the model saved as a ``.keras`` file (architecture + weights, no optimizer)."""
    return len(_keras_file(model))


def gzip_bytes(data: bytes | keras.Model) -> int:
    """Size after gzip at maximum compression (of raw bytes, or of a model's .keras file)."""
    if _validate.is_model(data):
        data = _keras_file(data)
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def load_tflite(model: bytes | bytearray | str | Path, name: str = "model") -> bytes:
    """Return the bytes of a TFLite flatbuffer, from bytes or a ``.tflite`` path, checked.

    Args:
        model: Flatbuffer bytes, or the path of a ``.tflite`` file.
        name: What to call ``model`` in error messages.

    Raises:
        ValueError: the file does not exist, or the bytes are not a TFLite flatbuffer (its
            file identifier at bytes 4-8 must be ``b"TFL3"``).
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ValueError(f"{name} must be a .tflite file or flatbuffer bytes, got a path "
                             f"that does not exist: {path}")
        content, name = path.read_bytes(), str(path)
    elif isinstance(model, (bytes, bytearray, memoryview)):
        content = bytes(model)
    else:
        raise ValueError(f"{name} must be TFLite flatbuffer bytes or a .tflite path, got "
                         f"{type(model).__name__}")
    if len(content) < 8 or content[4:8] != TFLITE_FILE_ID:
        raise ValueError(f"{name} is not a TFLite flatbuffer: bytes 4-8 must be "
                         f"{TFLITE_FILE_ID!r}, got {content[4:8]!r} ({len(content)} bytes)")
    return content


def tflite_schema():
    """The generated Python classes of the TFLite flatbuffer schema (to read or build models)."""
    return schema_py_generated


def _as_tflite(model) -> bytes:
    return to_tflite(model) if _validate.is_model(model) else load_tflite(model)


# ---------------------------------------------------------------------------- running
def tflite_interpreter(flatbuffer: bytes):
    """A LiteRT interpreter with tensors allocated, ready to ``invoke``."""
    try:
        interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=1)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"not a valid TFLite model ({len(flatbuffer)} bytes): {error}") from None
    interpreter.allocate_tensors()
    return interpreter


def predict_tflite(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Run a TFLite model on a batch through LiteRT, one example at a time.

    Handles quantized (int8/uint8) inputs and outputs: inputs are quantized with the model's
    scale and zero point and outputs are dequantized back to float, so the result is
    comparable with the Keras model's logits.
    """
    interpreter = tflite_interpreter(flatbuffer)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for example in np.asarray(x, dtype=np.float32):
        value = example[None]
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            value = np.clip(np.round(value / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], value.astype(inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] in (np.int8, np.uint8):
            scale, zero = out["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        results.append(result.astype(np.float32))
    return np.stack(results)


def predict(model, x: np.ndarray) -> np.ndarray:
    """Logits of a Keras model or a TFLite flatbuffer on a batch of inputs."""
    if _validate.is_model(model):
        return model.predict(x, batch_size=256, verbose=0)
    return predict_tflite(_as_tflite(model), x)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1] of a Keras model or TFLite flatbuffer."""
    return float(np.mean(np.argmax(predict(model, x), axis=-1) == np.asarray(y)))


def classification_metrics(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 (all in [0, 1])."""
    predicted = np.argmax(predict(model, x), axis=-1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, predicted, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y, predicted)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}


def median_ms(call, runs: int = 200, warmup: int = 20) -> float:
    """Median wall time of ``call()`` in milliseconds, after ``warmup`` untimed calls (every
    runtime's batch-1 latency is measured this way)."""
    runs = _validate.positive_int(runs, "runs")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def latency_tflite_ms(flatbuffer: bytes, runs: int = 200, warmup: int = 20) -> float:
    """Median batch-1 latency in milliseconds of a TFLite model through LiteRT (1 thread)."""
    interpreter = tflite_interpreter(flatbuffer)
    inp = interpreter.get_input_details()[0]
    sample = np.zeros(inp["shape"], dtype=inp["dtype"])
    interpreter.set_tensor(inp["index"], sample)
    return median_ms(interpreter.invoke, runs, warmup)


def latency_keras_ms(model: keras.Model, runs: int = 200, warmup: int = 20) -> float:
    """Median batch-1 latency in milliseconds of a compiled (``tf.function``) Keras call."""
    sample = tf.zeros((1,) + tuple(model.input_shape[1:]), dtype=tf.float32)
    call = tf.function(lambda x: model(x, training=False))
    return median_ms(lambda: call(sample).numpy(), runs, warmup)


# ---------------------------------------------------------------------------- reports
@dataclass
class Report:
    """One row of a comparison table: everything we measure about one model."""

    name: str
    params: int
    nonzero: int
    keras_bytes: int | None
    tflite_bytes: int
    tflite_gzip_bytes: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    latency_tflite_ms: float
    latency_keras_ms: float | None

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights (biases included)."""
        return 1.0 - self.nonzero / self.params if self.params else 0.0


def evaluate(model, data: Dataset, name: str | None = None, runs: int = 200,
             tflite: bytes | None = None) -> Report:
    """Measure a Keras model (or a TFLite flatbuffer alone) on ``data.x_test``.

    Args:
        model: A Keras model, or TFLite flatbuffer bytes (then Keras columns are ``None``).
        data: Dataset whose test split is used for accuracy and metrics.
        name: Row label; defaults to the model's name.
        runs: Timed runs for the latency medians.
        tflite: The flatbuffer to measure for a Keras model; defaults to a float32 conversion.

    Returns:
        A :class:`Report`. Accuracy and metrics come from the TFLite model, which is what a
        device would run.
    """
    if _validate.is_model(model):
        flatbuffer = tflite if tflite is not None else to_tflite(model)
        params, nonzero = count_params(model), count_nonzero(model)
        kbytes, klatency = keras_bytes(model), latency_keras_ms(model, runs)
        name = name or model.name
    else:
        flatbuffer = _as_tflite(model)
        params, nonzero = tflite_weight_counts(flatbuffer)
        kbytes, klatency = None, None
        name = name or "tflite model"
    metrics = classification_metrics(flatbuffer, data.x_test, data.y_test)
    return Report(name, params, nonzero, kbytes, len(flatbuffer),
                  gzip_bytes(flatbuffer), **metrics,
                  latency_tflite_ms=latency_tflite_ms(flatbuffer, runs),
                  latency_keras_ms=klatency)


def tflite_weight_counts(flatbuffer: bytes) -> tuple[int, int]:
    """(entries, non-zero entries) of the constant tensors (weights) in a TFLite model."""
    interpreter = tflite_interpreter(flatbuffer)
    total = nonzero = 0
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # activations have no data until invoke
            continue
        if detail["name"] and value.size > 1 and detail["index"] not in {
                d["index"] for d in interpreter.get_input_details()}:
            total += value.size
            nonzero += int(np.count_nonzero(value))
    return total, nonzero


def compare(reports: list[Report], baseline: int | str = 0) -> pd.DataFrame:
    """A tidy table of reports with ratios against a baseline row.

    Args:
        reports: Rows to show, in order.
        baseline: Index or name of the row the ratios are relative to.

    Returns:
        A DataFrame indexed by name: sizes in KB, accuracy in %, latency in ms, and
        ``size ratio`` (baseline TFLite bytes / row TFLite bytes, higher is smaller) and
        ``accuracy drop`` (points below the baseline).
    """
    if not reports:
        raise ValueError("compare needs at least one Report, got an empty list")
    frame = pd.DataFrame([asdict(r) for r in reports]).set_index("name")
    base = frame.iloc[baseline] if isinstance(baseline, int) else frame.loc[baseline]
    table = pd.DataFrame({
        "params": frame["params"],
        "sparsity %": 100 * (1 - frame["nonzero"] / frame["params"]),
        "Keras KB": frame["keras_bytes"] / 1024,
        "TFLite KB": frame["tflite_bytes"] / 1024,
        "TFLite gzip KB": frame["tflite_gzip_bytes"] / 1024,
        "size ratio": base["tflite_bytes"] / frame["tflite_bytes"],
        "accuracy %": 100 * frame["accuracy"],
        "accuracy drop": 100 * (base["accuracy"] - frame["accuracy"]),
        "macro F1 %": 100 * frame["f1"],
        "LiteRT ms": frame["latency_tflite_ms"],
        "Keras ms": frame["latency_keras_ms"],
    })
    return table.round({"sparsity %": 1, "Keras KB": 1, "TFLite KB": 1, "TFLite gzip KB": 1,
                        "size ratio": 2, "accuracy %": 2, "accuracy drop": 2, "macro F1 %": 2,
                        "LiteRT ms": 3, "Keras ms": 3})


# ---------------------------------------------------------------------------- honest comparisons
def standard_error(accuracy: float, n: int) -> float:
    """The binomial standard error of an accuracy (a fraction) measured on ``n`` examples.

    1,000 test images at 98 % give about 0.0044, i.e. +/-0.4 points: a smaller difference
    between two models is no measurable difference.
    """
    accuracy, n = _validate.fraction(accuracy, "accuracy"), _validate.positive_int(n, "n")
    return float(np.sqrt(accuracy * (1.0 - accuracy) / int(n)))


@dataclass(frozen=True)
class Spread:
    """A mean over seeds with its standard deviation (ddof=1; 0 for a single seed)."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} +/- {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def spread(values) -> Spread:
    """Mean and standard deviation of per-seed values (e.g. accuracies in %)."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("spread needs at least one value, got none")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return Spread(float(values.mean()), std, int(values.size))


def paired_drop(baseline, compressed) -> Spread:
    """The mean paired drop ``baseline[s] - compressed[s]`` over seeds, with its spread.

    Each compressed model is compared with the baseline it was made from (same seed), so
    the seed-to-seed spread of the baselines themselves (0.4-0.7 points on mnist5k) does not
    hide or invent a drop.
    """
    baseline, compressed = list(baseline), list(compressed)
    if len(baseline) != len(compressed):
        raise ValueError(f"baseline and compressed need one value per seed each, got "
                         f"{len(baseline)} and {len(compressed)}")
    return spread(np.subtract(baseline, compressed))


def describe_drop(drop_points: float, standard_error_points: float) -> str:
    """Words for an accuracy drop in points, judged against the test set's standard error.

    A drop within one standard error reads "no measurable loss", also when the compressed
    model scores higher: that is noise (or extra training, which a control row shows), never
    a gain from compression.
    """
    if drop_points <= standard_error_points:
        return f"no measurable loss ({drop_points:+.2f} points, SE +/-{standard_error_points:.2f})"
    return f"loss of {drop_points:.2f} points (SE +/-{standard_error_points:.2f})"


def per_class_metrics(model, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Precision, recall and F1 (in [0, 1]) and the test examples (support) of each class.

    An average accuracy can hide one class that compression hurts far more than the rest:
    compare the recall columns of two models (lessons 00 and 04 do).
    """
    from sklearn.metrics import precision_recall_fscore_support

    y = np.asarray(y)
    predicted = np.argmax(predict(model, x), axis=-1)
    labels = np.unique(np.concatenate([y, predicted]))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                         "support": support}, index=pd.Index(labels, name="class"))

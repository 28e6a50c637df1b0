"""Knowledge distillation: a small student learns from a large teacher's soft predictions.

Taught in ``lessons/03_distillation.ipynb``; practised in ``solutions/lab3_distillation.ipynb``
(whose hidden tests compare the students' code with this module).

* the maths: :func:`softmax_with_temperature` (``softmax(z / T)``: a larger T softens the
  distribution, so the teacher's small probabilities, its "dark knowledge", show) and
  :func:`distillation_loss` (Hinton et al. 2015:
  ``alpha * CE(y, student) + (1 - alpha) * T**2 * KL(teacher_T || student_T)``), with
  :func:`loss_gradient_norms` showing why the ``T**2`` is there;
* dark knowledge: :func:`temperature_table` (one example's soft targets per temperature, the
  table behind ``helpers.widgets.temperature_explorer``), :func:`class_similarity` and
  :func:`similar_classes` (which classes the teacher finds alike), :func:`entropy_bits`;
* training: :class:`Distiller`, a Keras 2 model whose ``train_step`` runs the teacher and
  the student on the same batch and updates only the student;
* the fair experiment: :func:`student_cnn` (LeNet-5 made narrow, 11.5x fewer parameters),
  :func:`train_student` (from scratch or distilled, same data, budget and seed; cached like
  ``models.pretrained``), :func:`compare_students` (one tidy table over seeds) and
  :func:`summarize` (mean, std and the share of the teacher gap closed).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers._tf import keras, tf
from helpers import _validate, models
from helpers._validate import positive_int
from helpers.cache import cache_key, cached_model, model_digest

__all__ = ["ENTROPY_BITS", "softmax_with_temperature", "distillation_loss", "loss_gradient_norms",
           "TEMPERATURES", "entropy_bits", "temperature_table", "class_similarity",
           "similar_classes", "Distiller", "student_cnn", "METHODS", "train_student",
           "compare_students", "summarize"]


# The column of temperature_table with each row's entropy (helpers.widgets reads it).
ENTROPY_BITS = "entropy bits"


# ---------------------------------------------------------------------------- validation
def _validate_temperature(temperature) -> float:
    return _validate.number(temperature, "temperature", 0, include_low=False)


def _validate_alpha(alpha) -> float:
    return _validate.fraction(alpha, "alpha")


# ---------------------------------------------------------------------------- the maths
def softmax_with_temperature(logits, temperature: float = 1.0) -> tf.Tensor:
    """Softmax of ``logits / temperature`` over the last axis.

    Args:
        logits: Array or tensor of shape ``(..., classes)``.
        temperature: ``T > 0``. ``T = 1`` is the ordinary softmax; larger ``T`` flattens the
            distribution, smaller ``T`` sharpens it towards the arg-max.

    Returns:
        A float32 tensor of the same shape whose last axis sums to 1.

    Raises:
        ValueError: ``temperature`` is not > 0.

    Example:
        >>> softmax_with_temperature([[2.0, 1.0, 0.0]], 4.0).numpy().round(3)
        array([[0.42 , 0.327, 0.254]], dtype=float32)
    """
    temperature = _validate_temperature(temperature)
    logits = tf.convert_to_tensor(logits, dtype=tf.float32)
    return tf.nn.softmax(logits / temperature, axis=-1)


def _labels_to_probabilities(y, num_classes: int) -> tf.Tensor:
    """Integer labels (N,) or (N, 1) -> one-hot (N, C); probability rows (N, C) pass through."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] != 1:
        if y.shape[-1] != num_classes:
            raise ValueError(f"y_true must be integer labels (N,) or probabilities (N, "
                             f"{num_classes}), got shape {tuple(y.shape)}")
        return tf.cast(y, tf.float32)
    labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
    if tf.executing_eagerly() and labels.shape[0]:
        low, high = int(tf.reduce_min(labels)), int(tf.reduce_max(labels))
        if low < 0 or high >= num_classes:
            raise ValueError(f"y_true labels must be in [0, {num_classes - 1}], got values "
                             f"from {low} to {high}")
    return tf.one_hot(labels, num_classes)


def distillation_loss(y_true, student_logits, teacher_logits, temperature: float = 4.0,
                      alpha: float = 0.1) -> tf.Tensor:
    """Hinton et al.'s distillation loss, averaged over the batch.

    ``alpha * CE(y_true, softmax(s)) + (1 - alpha) * T**2 * KL(softmax(t / T) || softmax(s / T))``

    The KL term compares the teacher's and the student's *softened* distributions; its
    gradient shrinks like ``1 / T**2``, so multiplying by ``T**2`` keeps both terms on the
    same scale whatever the temperature.

    Args:
        y_true: Integer labels ``(N,)`` or label probabilities ``(N, C)`` (e.g. mixed up).
        student_logits: Student outputs ``(N, C)`` (logits, not probabilities).
        teacher_logits: Teacher outputs ``(N, C)``.
        temperature: ``T > 0`` used for both softened distributions.
        alpha: Weight in ``[0, 1]`` of the hard-label term; ``alpha = 1`` is plain
            cross-entropy, ``alpha = 0`` learns from the teacher only.

    Returns:
        A scalar float32 tensor.

    Raises:
        ValueError: ``temperature <= 0``, ``alpha`` outside ``[0, 1]``, or the student's and
            teacher's logits have different shapes.
    """
    temperature, alpha = _validate_temperature(temperature), _validate_alpha(alpha)
    student_logits = tf.convert_to_tensor(student_logits, dtype=tf.float32)
    teacher_logits = tf.convert_to_tensor(teacher_logits, dtype=tf.float32)
    if not student_logits.shape.is_compatible_with(teacher_logits.shape):
        raise ValueError(f"student_logits and teacher_logits must have the same shape, got "
                         f"{student_logits.shape} and {teacher_logits.shape}")
    labels = _labels_to_probabilities(y_true, student_logits.shape[-1])
    hard = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, student_logits))
    teacher_log_p = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    soft = temperature ** 2 * tf.reduce_mean(kl)
    return alpha * hard + (1.0 - alpha) * soft


def loss_gradient_norms(y_true, student_logits, teacher_logits,
                        temperatures=(1.0, 2.0, 4.0, 8.0, 16.0)) -> pd.DataFrame:
    """How hard each term of the loss pushes the student's logits, per temperature.

    The norm of the gradient with respect to the student's logits, for the hard-label term,
    the KL term alone, and the KL term times ``T**2`` (what :func:`distillation_loss` uses).
    It shows why the ``T**2`` is there: without it, the KL term's push fades like
    ``1 / T**2`` as the temperature rises.

    Args:
        y_true: Integer labels ``(N,)``.
        student_logits: Student logits ``(N, C)``.
        teacher_logits: Teacher logits ``(N, C)``.
        temperatures: Temperatures to compare, each > 0.

    Returns:
        A DataFrame indexed by temperature with columns ``hard term``, ``KL term`` and
        ``KL term x T²``.
    """
    student_logits = tf.convert_to_tensor(student_logits, dtype=tf.float32)
    rows = []
    for temperature in [_validate_temperature(t) for t in temperatures]:
        norms = []
        for alpha in (1.0, 0.0):
            with tf.GradientTape() as tape:
                tape.watch(student_logits)
                loss = distillation_loss(y_true, student_logits, teacher_logits, temperature,
                                         alpha)
            norms.append(float(tf.norm(tape.gradient(loss, student_logits))))
        rows.append({"hard term": norms[0], "KL term": norms[1] / temperature ** 2,
                     "KL term x T²": norms[1]})
    return pd.DataFrame(rows, index=pd.Index([float(t) for t in temperatures],
                                             name="temperature"))


# ---------------------------------------------------------------------------- dark knowledge
TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def entropy_bits(probabilities) -> np.ndarray:
    """Shannon entropy in bits of each distribution (last axis): 0 = certain, log2(C) = flat."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log2(p)).sum(axis=-1)


def temperature_table(logits, temperatures=TEMPERATURES, class_names=None) -> pd.DataFrame:
    """One example's soft targets at each temperature (the table behind the lesson's slider).

    Args:
        logits: One example's logits, shape ``(C,)``.
        temperatures: Temperatures to tabulate, each > 0.
        class_names: Column names (defaults to ``"0"``, ``"1"``, ...).

    Returns:
        A DataFrame indexed by temperature: one probability column per class, then
        ``entropy bits``.

    Raises:
        ValueError: ``logits`` is not one vector, or a temperature is not > 0.
    """
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim != 1 or z.size < 2:
        raise ValueError(f"logits must be one example's vector of >= 2 logits, got shape "
                         f"{z.shape}")
    temperatures = [_validate_temperature(t) for t in temperatures]
    if not temperatures:
        raise ValueError("temperatures must hold at least one value, got none")
    names = list(class_names) if class_names is not None else [str(i) for i in range(z.size)]
    if len(names) != z.size:
        raise ValueError(f"class_names must have {z.size} names, got {len(names)}")
    probs = np.stack([softmax_with_temperature(z, t).numpy() for t in temperatures])
    table = pd.DataFrame(probs, index=pd.Index(temperatures, name="temperature"),
                         columns=names)
    table[ENTROPY_BITS] = entropy_bits(probs)
    return table


def class_similarity(logits, labels, temperature: float = 4.0, class_names=None) -> pd.DataFrame:
    """The teacher's average soft target for each true class: which classes look alike.

    Row ``i`` is the mean of ``softmax(logits / T)`` over the examples labelled ``i``; its
    off-diagonal entries are the "dark knowledge": how much a typical ``i`` resembles each
    other class, in the teacher's eyes.

    Args:
        logits: Teacher logits ``(N, C)``.
        labels: Integer labels ``(N,)``.
        temperature: ``T > 0``.
        class_names: Row/column names (defaults to ``"0"``, ``"1"``, ...).

    Returns:
        A ``C x C`` DataFrame (rows: true class, columns: soft-target class); rows sum to 1.

    Raises:
        ValueError: shapes do not match, or a bad temperature.
    """
    z, y = np.asarray(logits, dtype=np.float32), np.asarray(labels).astype(int).ravel()
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"logits must be (N, C) with one label per row, got logits "
                         f"{z.shape} and {y.shape[0]} labels")
    probs = softmax_with_temperature(z, temperature).numpy()
    classes = z.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    rows = [probs[y == c].mean(axis=0) if np.any(y == c) else np.full(classes, np.nan)
            for c in range(classes)]
    return pd.DataFrame(rows, index=pd.Index(names, name="true class"), columns=names)


def similar_classes(similarity: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The ``top`` (true class, look-alike class) pairs with the largest soft-target mass.

    Args:
        similarity: A matrix from :func:`class_similarity`.
        top: How many pairs to return, >= 1.

    Returns:
        A DataFrame with columns ``true class``, ``looks like`` and ``mean probability``,
        largest first (the diagonal, a class resembling itself, is left out).
    """
    top = positive_int(top, "top")
    values = similarity.to_numpy(dtype=float).copy()
    np.fill_diagonal(values, -np.inf)
    order = np.argsort(values, axis=None)[::-1][:top]
    rows, cols = np.unravel_index(order, values.shape)
    return pd.DataFrame({"true class": similarity.index[rows],
                         "looks like": similarity.columns[cols],
                         "mean probability": values[rows, cols]})


# ---------------------------------------------------------------------------- the model
def _output_shape(model: keras.Model, name: str) -> tuple:
    return tuple(_validate.model(model, name).output_shape[1:])


class Distiller(keras.Model):
    """Train ``student`` to match a frozen ``teacher`` (Keras 2 custom train/test steps).

    ``fit`` runs both models on each batch and minimizes :func:`distillation_loss`; only the
    student's weights change (the teacher runs in inference mode and is never modified).
    ``evaluate`` and ``predict`` use the student alone (``evaluate``'s ``loss`` is the
    student's cross-entropy on the labels), so after training, ``distiller.student`` is the
    compressed model to deploy.

    Args:
        teacher: A trained Keras model that outputs logits.
        student: An (untrained) Keras model with the same output shape.
        temperature: ``T > 0`` of the soft targets (typical: 2 to 10).
        alpha: Weight in ``[0, 1]`` of the hard-label loss (typical: 0.1 to 0.5).
        loss_fn: ``loss_fn(y_true, student_logits, teacher_logits, temperature, alpha)``
            returning a scalar tensor; defaults to :func:`distillation_loss` (the lab plugs
            in its own implementation here).

    Raises:
        ValueError: bad ``temperature`` or ``alpha``, output shapes that differ, or a
            ``loss_fn`` that is not callable.

    Example:
        >>> distiller = Distiller(teacher, student, temperature=4.0, alpha=0.1)
        >>> distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        >>> distiller.fit(x_train, y_train, epochs=10)  # doctest: +SKIP
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, temperature: float = 4.0,
                 alpha: float = 0.1, loss_fn=None, **kwargs):
        super().__init__(**kwargs)
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn or distillation_loss
        teacher_shape = _output_shape(teacher, "teacher")
        student_shape = _output_shape(student, "student")
        if teacher_shape != student_shape:
            raise ValueError(f"teacher and student must have the same output shape, got "
                             f"{teacher_shape} (teacher) and {student_shape} (student)")
        self.temperature = _validate_temperature(temperature)
        self.alpha = _validate_alpha(alpha)
        self.teacher, self.student = teacher, student  # only the student's weights train
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker] + self.compiled_metrics.metrics

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        teacher_logits = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            loss = self.loss_fn(y, student_logits, teacher_logits, self.temperature,
                                self.alpha)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, student_logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        student_logits = self.student(x, training=False)
        labels = _labels_to_probabilities(y, student_logits.shape[-1])
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, student_logits))
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, student_logits)
        return {m.name: m.result() for m in self.metrics}


# ---------------------------------------------------------------------------- experiments
def student_cnn(input_shape=(28, 28, 1), num_classes: int = 10, filters: tuple[int, int] = (4, 8),
                hidden: int = 32) -> keras.Model:
    """The student: LeNet-5 made narrow (4 and 8 filters instead of 6 and 16, one small dense).

    5,370 parameters on 28x28 inputs, 11.5x fewer than the LeNet-5 teacher (61,706).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    padding = "same" if shape[0] < 20 else "valid"  # 8x8 digits: keep the maps big enough
    layers = keras.layers
    return keras.Sequential([
        layers.InputLayer(input_shape=shape),
        layers.Conv2D(filters[0], 5, padding=padding, activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(filters[1], 5, padding=padding, activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(hidden, activation="relu", name="fc1"),
        layers.Dense(num_classes, name="logits"),
    ], name="student_cnn")


METHODS = ("scratch", "distilled")


def train_student(teacher: keras.Model, data, method: str = "distilled", seed: int = 0,
                  epochs: int = 15, batch_size: int = 64, learning_rate: float = 2e-3,
                  temperature: float = 4.0, alpha: float = 0.1, build_student=student_cnn,
                  cache: bool = True, progress: bool = False) -> keras.Model:
    """Train one student, from scratch (hard labels) or distilled from ``teacher``.

    Both methods see the same images in the same order for the same number of steps, with
    the same initial weights (``seed``); only the targets differ. With ``cache=True`` the
    trained weights are stored like ``models.pretrained`` (keyed by recipe, seed and the
    teacher's weights), so a lesson trains once and then loads.

    Args:
        teacher: The trained teacher (logits). Unused when ``method="scratch"`` except for
            its output shape.
        data: A ``helpers.data.Dataset``; the student trains on ``data.x_train``.
        method: ``"scratch"`` (cross-entropy on labels) or ``"distilled"``.
        seed: Seed of the initial weights and of the shuffling.
        epochs, batch_size, learning_rate: The training budget (Adam).
        temperature, alpha: Distillation settings (see :func:`distillation_loss`).
        build_student: ``build_student(input_shape, num_classes)`` returns a new model.
        cache: Load/store the trained weights in the course cache.
        progress: Show a progress bar while training.

    Returns:
        The trained student, compiled for evaluation (sparse cross-entropy, accuracy).

    Raises:
        ValueError: unknown ``method`` or a bad budget, temperature or alpha.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    _validate.learning_rate(learning_rate)
    temperature, alpha = _validate_temperature(temperature), _validate_alpha(alpha)
    recipe = {"method": method, "epochs": epochs, "batch_size": batch_size,
              "learning_rate": float(learning_rate), "student": build_student.__name__}
    if method == "distilled":
        recipe.update(temperature=temperature, alpha=alpha, teacher=model_digest(teacher))

    def build_model():
        models.set_seed(seed)
        student = build_student(data.input_shape, data.num_classes)
        _output_shape(student, "student")
        if tuple(teacher.output_shape[1:]) != tuple(student.output_shape[1:]):
            raise ValueError(f"teacher and student must have the same output shape, got "
                             f"{tuple(teacher.output_shape[1:])} (teacher) and "
                             f"{tuple(student.output_shape[1:])} (student)")
        return models.compile_model(student, learning_rate)

    def fit(student):
        models.set_seed(seed)
        trainer = student
        if method == "distilled":
            trainer = Distiller(teacher, student, temperature, alpha)
            trainer.compile(keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
        callbacks = [models.ProgressBar(epochs, f"{method} student")] if progress else []
        trainer.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                    shuffle=True, verbose=0, callbacks=callbacks)

    if not cache:
        student = build_model()
        fit(student)
        return student
    key = (f"student-{build_student.__name__}-{data.name}-{method}-seed{seed}-"
           f"{cache_key(recipe, data.input_shape)}")
    return cached_model(key, build_model, fit)


def compare_students(teacher: keras.Model, data, seeds=(0, 1, 2), **recipe) -> pd.DataFrame:
    """Train the same student from scratch and distilled, for each seed; one tidy table.

    Args:
        teacher: The trained teacher.
        data: A ``helpers.data.Dataset``; accuracy is measured on ``data.x_test``.
        seeds: One scratch and one distilled student per seed (same seed, same start).
        **recipe: Passed to :func:`train_student` (``epochs``, ``temperature``, ``alpha``,
            ``build_student``, ``cache``, ...).

    Returns:
        A DataFrame with one row per (seed, method), all measured now on the test set:
        ``seed``, ``method``, ``params``, ``accuracy %``, ``agrees with teacher %`` (same
        top-1 class as the teacher) and ``KL to teacher`` (mean
        ``KL(teacher_T || student_T)`` at the recipe's temperature, default 4: how closely the
        student imitates the teacher's soft targets; lower is closer).

    Raises:
        ValueError: ``seeds`` is empty, or a bad recipe (see :func:`train_student`).
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed, got an empty list")
    temperature = _validate_temperature(recipe.get("temperature", 4.0))
    teacher_logits = teacher.predict(data.x_test, batch_size=256, verbose=0)
    rows = []
    for seed in seeds:
        for method in METHODS:
            student = train_student(teacher, data, method, seed, **recipe)
            logits = student.predict(data.x_test, batch_size=256, verbose=0)
            predicted = np.argmax(logits, axis=-1)
            kl = distillation_loss(data.y_test, logits, teacher_logits, temperature, 0.0)
            rows.append({"seed": seed, "method": method, "params": student.count_params(),
                         "accuracy %": 100 * float(np.mean(predicted == data.y_test)),
                         "agrees with teacher %": 100 * float(np.mean(
                             predicted == np.argmax(teacher_logits, axis=-1))),
                         "KL to teacher": float(kl) / temperature ** 2})
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame, teacher_accuracy: float) -> pd.DataFrame:
    """Mean and standard deviation per method, and the share of the teacher gap closed.

    Args:
        results: The table from :func:`compare_students` (needs ``scratch`` rows).
        teacher_accuracy: The teacher's test accuracy as a fraction in ``[0, 1]``.

    Returns:
        A DataFrame indexed by method (``scratch``, ``distilled``) with ``mean %``,
        ``std %`` (sample standard deviation over seeds; 0 for one seed), ``seeds``,
        ``gap closed %`` (how much of the distance from the scratch mean to the teacher the
        method covers: 0 for scratch, 100 = as good as the teacher, negative = worse than
        scratch) and the means of the other numeric columns (agreement, KL).

    Raises:
        ValueError: missing columns or no ``scratch`` rows, or ``teacher_accuracy`` outside
            ``[0, 1]``.
    """
    missing = {"method", "accuracy %"} - set(results.columns)
    if missing:
        raise ValueError(f"results must come from compare_students; missing columns "
                         f"{sorted(missing)}")
    if "scratch" not in set(results["method"]):
        raise ValueError("results must hold 'scratch' rows: the gap is measured from them")
    if not 0.0 <= float(teacher_accuracy) <= 1.0:
        raise ValueError(f"teacher_accuracy must be a fraction in [0, 1], got "
                         f"{teacher_accuracy!r}")
    groups = results.groupby("method")
    table = groups["accuracy %"].agg(["mean", "std", "count"]).fillna({"std": 0.0})
    table.columns = ["mean %", "std %", "seeds"]
    table = table.reindex([m for m in METHODS if m in table.index]
                          + [m for m in table.index if m not in METHODS])
    scratch = table.loc["scratch", "mean %"]
    gap = 100.0 * float(teacher_accuracy) - scratch
    table["gap closed %"] = 100 * (table["mean %"] - scratch) / gap if gap > 0 else np.nan
    for column in ("agrees with teacher %", "KL to teacher"):
        if column in results.columns:
            table[column] = groups[column].mean()
    return table.round({"mean %": 2, "std %": 2, "gap closed %": 1,
                        "agrees with teacher %": 2, "KL to teacher": 4})

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
  :func:`train_student` (the converged recipe ``RECIPE``, from scratch on the labelled images
  or distilled on every image with ``UNLABELLED`` marking the labels it may not use; the
  teacher runs online on each augmented batch; cached like ``models.pretrained``),
  :func:`labelled_subset` and :func:`training_set` (who sees what);
* the lesson's experiments: :func:`label_scarce` and :func:`summarize` (a student with 100 to
  4,000 labels, scratch vs distilled over seeds, the share of the teacher gap closed) and
  :func:`omitted_class` with :func:`bias_shift` (Hinton's student that never saw a 3).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers._tf import keras, tf
from helpers import _validate, models
from helpers._validate import positive_int
from helpers.cache import cache_key, cached_model, model_digest, seeded

__all__ = ["UNLABELLED", "ENTROPY_BITS", "softmax_with_temperature", "distillation_loss", "loss_gradient_norms",
           "TEMPERATURES", "entropy_bits", "temperature_table", "class_similarity",
           "similar_classes", "Distiller", "student_cnn", "METHODS", "RECIPE",
           "labelled_subset", "training_set", "train_student", "LABEL_COUNTS", "label_scarce",
           "summarize", "bias_shift", "omitted_class"]


UNLABELLED = -1  # the label of a transfer-set image whose label the student may not use

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
        if low < UNLABELLED or high >= num_classes:
            raise ValueError(f"y_true labels must be in [0, {num_classes - 1}] (or "
                             f"{UNLABELLED}: unlabelled), got values from {low} to {high}")
    return tf.one_hot(labels, num_classes)  # an UNLABELLED row is all zeros


def distillation_loss(y_true, student_logits, teacher_logits, temperature: float = 4.0,
                      alpha: float = 0.1) -> tf.Tensor:
    """Hinton et al.'s distillation loss, averaged over the batch.

    ``alpha * CE(y_true, softmax(s)) + (1 - alpha) * T**2 * KL(softmax(t / T) || softmax(s / T))``

    The KL term compares the teacher's and the student's *softened* distributions; its
    gradient shrinks like ``1 / T**2``, so multiplying by ``T**2`` keeps both terms on the
    same scale whatever the temperature.

    Args:
        y_true: Integer labels ``(N,)`` or label probabilities ``(N, C)`` (e.g. mixed up).
            A label ``UNLABELLED`` (-1) marks an example of the transfer set whose label
            the student may not use: the hard term averages over the labelled ones only.
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
    labelled = tf.reduce_sum(labels, axis=-1)  # 1 per labelled example, 0 if UNLABELLED
    # The fused op's gradient (softmax - labels) assumes rows that sum to 1: mask it too.
    cross_entropy = tf.nn.softmax_cross_entropy_with_logits(labels, student_logits)
    hard = tf.reduce_sum(labelled * cross_entropy) / tf.maximum(tf.reduce_sum(labelled), 1.0)
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

# The student recipe (cosine decay to zero, shifts and rotations), the same for both methods.
# Measured with 1,000 steps and alpha 0.5 (mnist5k, seeds 0-2, the 30-epoch teachers): 300
# labels, scratch 93.07 +/- 0.80 %, distilled 94.43 +/- 0.64 %: only 28 % of the gap. Issue
# 15's probe closed 51 % with 2,000 steps and soft targets alone, hence 2,000 steps and a
# small alpha here (not yet measured with this code when committed).
RECIPE = {"steps": 2000, "batch_size": 64, "learning_rate": 3e-3, "temperature": 4.0,
          "alpha": 0.1}


def labelled_subset(labels, count: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` labelled examples, the same number from each class (sorted).

    Args:
        labels: Integer labels of the training images.
        count: How many labels the student may use (``None``: all of them).
        seed: Which examples (a new draw per seed; shifted by ``EDGE_AI_SEED``).

    Raises:
        ValueError: ``count`` is not between the number of classes and the number of labels.
    """
    labels = np.asarray(labels).astype(int).ravel()
    if count is None:
        return np.arange(len(labels))
    classes = np.unique(labels)
    count = positive_int(count, "labels")
    if not len(classes) <= count <= len(labels):
        raise ValueError(f"labels must be between {len(classes)} (one per class) and "
                         f"{len(labels)}, got {count}")
    rng = np.random.default_rng(seeded(seed))
    share = np.diff(np.linspace(0, count, len(classes) + 1).round().astype(int))
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, share)]
    return np.sort(np.concatenate(chosen))


def training_set(data, method: str, labels: int | None = None, seed: int = 0,
                 omit_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images and targets one student trains on (label-scarce and omitted-class runs).

    ``scratch`` gets only the labelled images. ``distilled`` gets every training image as
    a transfer set: the teacher labels all of them, and the images whose label the student
    may not use carry ``UNLABELLED`` (the hard-label term skips them). ``omit_class``
    removes every image of that class first (Hinton et al. 2015, section 3).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x, y = data.x_train, np.asarray(data.y_train).astype(np.int32)
    if omit_class is not None:
        if not 0 <= int(omit_class) < data.num_classes:
            raise ValueError(f"omit_class must be in [0, {data.num_classes - 1}], got "
                             f"{omit_class!r}")
        keep = y != int(omit_class)
        x, y = x[keep], y[keep]
    chosen = labelled_subset(y, labels, seed)
    if method == "scratch":
        return x[chosen], y[chosen]
    targets = np.full_like(y, UNLABELLED)
    targets[chosen] = y[chosen]
    return x, targets


def train_student(teacher: keras.Model, data, method: str = "distilled", seed: int = 0,
                  labels: int | None = None, omit_class: int | None = None,
                  steps: int = RECIPE["steps"], batch_size: int = RECIPE["batch_size"],
                  learning_rate: float = RECIPE["learning_rate"],
                  temperature: float = RECIPE["temperature"], alpha: float = RECIPE["alpha"],
                  augment: bool = True, build_student=student_cnn, cache: bool = True,
                  progress: bool = False) -> keras.Model:
    """Train one student with the converged recipe, from scratch or distilled from ``teacher``.

    Both methods get the same number of steps, the same cosine-decayed learning rate, the
    same augmentation (small shifts and rotations) and the same initial weights (``seed``).
    The scratch student sees the labelled images only; the distilled student sees every
    training image, and the teacher labels each augmented batch *online*, on the very images
    the student sees (consistent teaching, Beyer et al. 2022); its hard-label term uses only
    the ``labels`` labelled ones (see :func:`training_set`). With ``cache=True`` the trained
    weights are stored like ``models.pretrained`` (keyed by recipe, seed and the teacher's
    weights), so a lesson trains once and then loads.

    Args:
        teacher: The trained teacher (logits). Unused when ``method="scratch"`` except for
            its output shape.
        data: A ``helpers.data.Dataset``.
        method: ``"scratch"`` (cross-entropy on labels) or ``"distilled"``.
        seed: Seed of the initial weights, the labelled subset, shuffling and augmentation.
        labels: How many labelled training images the student may use (``None``: all).
        omit_class: Leave every training image of this class out (``None``: keep all).
        steps, batch_size, learning_rate: The budget (Adam, cosine decay to 0 over ``steps``).
        temperature, alpha: Distillation settings (see :func:`distillation_loss`).
        augment: Random shifts and rotations of every batch (``models.augmented``).
        build_student: ``build_student(input_shape, num_classes)`` returns a new model.
        cache: Load/store the trained weights in the course cache.
        progress: Show a progress bar while training.

    Returns:
        The trained student, compiled for evaluation (sparse cross-entropy, accuracy).

    Raises:
        ValueError: unknown ``method``, a bad budget, temperature, alpha, label count or
            class.
    """
    steps = positive_int(steps, "steps")
    batch_size = positive_int(batch_size, "batch_size")
    _validate.learning_rate(learning_rate)
    temperature, alpha = _validate_temperature(temperature), _validate_alpha(alpha)
    x, y = training_set(data, method, labels, seed, omit_class)
    recipe = {"method": method, "steps": steps, "batch_size": batch_size, "labels": labels,
              "omit_class": omit_class, "learning_rate": float(learning_rate),
              "augment": bool(augment), "student": build_student.__name__}
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
        schedule = keras.optimizers.schedules.CosineDecay(float(learning_rate), steps)
        trainer = student
        if method == "distilled":
            trainer = Distiller(teacher, student, temperature, alpha)
        trainer.compile(keras.optimizers.Adam(schedule), metrics=["accuracy"],
                        steps_per_execution=min(50, steps),  # fewer Python round trips
                        **({} if method == "distilled" else {"loss": student.loss}))
        if augment:
            batches = models.augmented(x, y, batch_size, seeded(seed))
        else:
            batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
                len(x), seed=seeded(seed)).batch(batch_size)
        rounds = 10 if steps % 10 == 0 else 1  # progress in tenths of the budget
        callbacks = [models.ProgressBar(rounds, f"{method} student")] if progress else []
        trainer.fit(batches.repeat(), epochs=rounds, steps_per_epoch=steps // rounds,
                    verbose=0, callbacks=callbacks)

    if not cache:
        student = build_model()
        fit(student)
        return student
    key = (f"student-{build_student.__name__}-{data.name}-{method}-seed{seed}-"
           f"{cache_key(recipe, data.input_shape)}")
    return cached_model(key, build_model, fit)


LABEL_COUNTS = (100, 300, 1000, 4000)


def _accuracy_pct(logits, y) -> float:
    return 100.0 * float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y)))


def _predict(model, x) -> np.ndarray:
    return model.predict(x, batch_size=512, verbose=0)


def label_scarce(data, label_counts=None, seeds=(0, 1, 2), teacher: str = "lenet5",
                 progress: bool = False, **recipe) -> pd.DataFrame:
    """The label-scarce experiment: a student with few labels, alone or taught.

    For each seed, the teacher is ``models.pretrained(teacher, data, seed)`` (trained on
    every label). For each label count N, one student trains from scratch on N labelled
    images and one is distilled on all training images with the hard-label term on the same
    N only (:func:`train_student`; same budget, augmentation and initial weights). Every
    student is cached, so a second call only measures.

    Args:
        data: A ``helpers.data.Dataset``.
        label_counts: The numbers of labels N to try (default: those of ``LABEL_COUNTS``
            below the training set's size, then all of it: the full-label control).
        seeds: One teacher, one labelled subset and one pair of students per seed.
        teacher: The teacher's name in ``helpers.models``.
        progress: Show progress bars while training.
        **recipe: Passed to :func:`train_student` (``steps``, ``temperature``, ``alpha``...).

    Returns:
        One row per (seed, labels, method) with ``accuracy %`` measured now on the test
        set; ``method`` is ``scratch``, ``distilled`` or ``teacher`` (one teacher row per
        seed, at the full label count).
    """
    if label_counts is None:
        label_counts = [n for n in LABEL_COUNTS if n < len(data.y_train)] + [len(data.y_train)]
    seeds, counts = list(seeds), [positive_int(n, "labels") for n in label_counts]
    if not seeds or not counts:
        raise ValueError("seeds and label_counts must each hold at least one value")
    rows = []
    for seed in seeds:
        model = models.pretrained(teacher, data, seed, progress=progress)
        rows.append({"seed": seed, "labels": len(data.y_train), "method": "teacher",
                     "accuracy %": _accuracy_pct(_predict(model, data.x_test), data.y_test)})
        for count in counts:
            for method in METHODS:
                student = train_student(model, data, method, seed, labels=count,
                                        progress=progress, **recipe)
                rows.append({"seed": seed, "labels": count, "method": method,
                             "accuracy %": _accuracy_pct(_predict(student, data.x_test),
                                                         data.y_test)})
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame, test_size: int = 1000) -> pd.DataFrame:
    """Mean and spread per label count, the paired gain, and the share of the gap closed.

    Args:
        results: The table from :func:`label_scarce`.
        test_size: Test images behind each accuracy (for the standard error).

    Returns:
        A DataFrame indexed by ``labels`` with ``scratch %``, ``scratch std``,
        ``distilled %``, ``distilled std``, ``teacher %`` (means and sample standard
        deviations over seeds), ``gain`` (distilled minus scratch, paired by seed, in
        points) with ``gain std``, ``SE`` (one test set's standard error of an accuracy,
        in points) and ``gap closed %``: ``100 * (distilled - scratch) / (teacher -
        scratch)`` from the means (0 = no better than scratch, 100 = as good as the
        teacher).

    Raises:
        ValueError: the table lacks columns or methods.
    """
    missing = {"seed", "labels", "method", "accuracy %"} - set(results.columns)
    if missing:
        raise ValueError(f"results must come from label_scarce; missing columns "
                         f"{sorted(missing)}")
    if not {"teacher", *METHODS} <= set(results["method"]):
        raise ValueError("results must hold 'teacher', 'scratch' and 'distilled' rows")
    teacher = results.loc[results["method"] == "teacher", "accuracy %"].mean()
    wide = results[results["method"] != "teacher"].pivot_table(
        index=["labels", "seed"], columns="method", values="accuracy %")
    wide["gain"] = wide["distilled"] - wide["scratch"]
    grouped = wide.groupby(level="labels")
    table = pd.DataFrame({"scratch %": grouped["scratch"].mean(),
                          "scratch std": grouped["scratch"].std(),
                          "distilled %": grouped["distilled"].mean(),
                          "distilled std": grouped["distilled"].std(),
                          "teacher %": teacher,
                          "gain": grouped["gain"].mean(), "gain std": grouped["gain"].std()})
    table = table.fillna(0.0)
    table["SE"] = [100 * np.sqrt(p * (1 - p) / test_size)
                   for p in table["scratch %"].clip(0, 100) / 100]
    gap = table["teacher %"] - table["scratch %"]
    table["gap closed %"] = np.where(gap > 0, 100 * table["gain"] / gap.where(gap > 0), np.nan)
    return table.round(2)


def bias_shift(logits, target_class: int, fraction: float) -> float:
    """The amount to add to one class's logit so that it wins on ``fraction`` of the inputs.

    Hinton et al. (2015, section 3) raise the bias of a class the student never saw; this
    picks the amount from unlabelled images: a class wins on an image once its logit, plus
    the shift, passes the largest other logit.

    Args:
        logits: Student logits ``(N, C)`` on unlabelled images.
        target_class: The class to raise.
        fraction: The share of images that should then be predicted as ``target_class``
            (e.g. the share the teacher predicts), in ``[0, 1]``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    others = np.delete(z, int(target_class), axis=1).max(axis=1)
    needed = others - z[:, int(target_class)]  # a shift above this makes the class win
    return float(np.quantile(needed, float(fraction)))


def omitted_class(data, digit: int = 3, seeds=(0, 1, 2), teacher: str = "lenet5",
                  progress: bool = False, **recipe) -> pd.DataFrame:
    """The dark-knowledge experiment: students whose training images hold no ``digit``.

    Both students train on every training image except the ``digit``s (all their labels;
    :func:`train_student` with ``omit_class``); the distilled one also sees the teacher's
    soft targets, which mention ``digit`` whenever an image resembles one. Then the
    student's bias for ``digit`` is raised (:func:`bias_shift`) until it predicts
    ``digit`` on as many training images as the teacher does (the images, not their
    labels, are used).

    Returns:
        One row per (seed, method): ``digit %`` (test accuracy on that digit) before and
        ``digit % corrected`` after the bias correction, ``others %`` (accuracy on the
        other digits, before), ``all % corrected`` (all test images, after) and ``shift``.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed, got an empty list")
    is_digit = np.asarray(data.y_test) == int(digit)
    rows = []
    for seed in seeds:
        model = models.pretrained(teacher, data, seed, progress=progress)
        share = float(np.mean(np.argmax(_predict(model, data.x_train), -1) == digit))
        for method in METHODS:
            student = train_student(model, data, method, seed, omit_class=digit,
                                    progress=progress, **recipe)
            shift = bias_shift(_predict(student, data.x_train), digit, share)
            logits = _predict(student, data.x_test)
            corrected = logits.copy()
            corrected[:, digit] += shift
            rows.append({"seed": seed, "method": method,
                         "digit %": _accuracy_pct(logits[is_digit], data.y_test[is_digit]),
                         "digit % corrected": _accuracy_pct(corrected[is_digit],
                                                            data.y_test[is_digit]),
                         "others %": _accuracy_pct(logits[~is_digit], data.y_test[~is_digit]),
                         "all % corrected": _accuracy_pct(corrected, data.y_test),
                         "shift": shift})
    return pd.DataFrame(rows)

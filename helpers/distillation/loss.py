"""The maths of distillation: softened softmax, the loss, dark knowledge in a teacher's outputs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers._tf import tf
from helpers import _validate
from helpers._validate import positive_int

__all__ = ["UNLABELLED", "ENTROPY_BITS", "softmax_with_temperature", "distillation_loss",
           "loss_gradient_norms", "TEMPERATURES", "entropy_bits", "temperature_table",
           "class_similarity", "similar_classes"]


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

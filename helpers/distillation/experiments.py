"""The lesson's experiments: the label-scarce student and the student that never saw a digit."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from helpers import models
from helpers._validate import positive_int
from helpers.cache import share_work
from helpers.distillation.training import METHODS, train_student

__all__ = ["LABEL_COUNTS", "label_scarce", "summarize", "bias_shift", "omitted_class"]


LABEL_COUNTS = (100, 300, 1000, 4000)


def _accuracy_pct(logits, y) -> float:
    return 100.0 * float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y)))


def _predict(model, x) -> np.ndarray:
    return model.predict(x, batch_size=512, verbose=0)


def _teachers(name: str, data, progress: bool):
    """``seed -> models.pretrained(name, data, seed)``, each teacher loaded once."""
    return functools.cache(lambda seed: models.pretrained(name, data, seed, progress=progress))


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
    teacher_of = _teachers(teacher, data, progress)

    def run(job):
        seed, count, method = job
        model = teacher_of(seed)
        if method != "teacher":
            model = train_student(model, data, method, seed, labels=count, progress=progress,
                                  **recipe)
        return {"seed": seed, "labels": count, "method": method,
                "accuracy %": _accuracy_pct(_predict(model, data.x_test), data.y_test)}

    jobs = []
    for seed in seeds:
        jobs += [(seed, len(data.y_train), "teacher")]
        jobs += [(seed, count, method) for count in counts for method in METHODS]
    return pd.DataFrame(share_work(jobs, run))  # parallel workers train different students


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
    teacher_of = _teachers(teacher, data, progress)

    def run(job):
        seed, method = job
        model = teacher_of(seed)
        share = float(np.mean(np.argmax(_predict(model, data.x_train), -1) == digit))
        student = train_student(model, data, method, seed, omit_class=digit,
                                progress=progress, **recipe)
        shift = bias_shift(_predict(student, data.x_train), digit, share)
        logits = _predict(student, data.x_test)
        corrected = logits.copy()
        corrected[:, digit] += shift
        return {"seed": seed, "method": method,
                "digit %": _accuracy_pct(logits[is_digit], data.y_test[is_digit]),
                "digit % corrected": _accuracy_pct(corrected[is_digit], data.y_test[is_digit]),
                "others %": _accuracy_pct(logits[~is_digit], data.y_test[~is_digit]),
                "all % corrected": _accuracy_pct(corrected, data.y_test),
                "shift": shift}

    jobs = [(seed, method) for seed in seeds for method in METHODS]
    return pd.DataFrame(share_work(jobs, run))  # parallel workers train different students

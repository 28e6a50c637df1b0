"""Argument checks shared by every ``helpers`` module (the TFMOT ``_validate_*`` habit).

Each check returns the value (converted: an ``int``, a ``float``, an array) or raises a
``ValueError`` in one style: the argument's name, what it must be, and the value given::

    sparsity must be in [0, 1), got 1.5
    epochs must be an integer >= 1, got 0
    model must be a Keras model, got str

This is the one module that asks whether something is a Keras model (:func:`is_model`,
:func:`model`), so the rule lives in one place.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

__all__ = ["is_model", "model", "sequential", "dataset", "integer", "positive_int", "epochs",
           "number", "fraction", "sparsity", "learning_rate", "one_of", "finite_array"]


def _interval(low=None, high=None, include_low: bool = True, include_high: bool = True) -> str:
    """The allowed range as the messages write it: ``"in [0, 1)"``, ``">= 1"``, ``"> 0"``."""
    if low is not None and high is not None:
        return f"in {'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
    if low is not None:
        return f"{'>=' if include_low else '>'} {low}"
    if high is not None:
        return f"{'<=' if include_high else '<'} {high}"
    return "a number"


# TensorFlow and helpers.data are imported on first use: `import helpers` and the grader stay
# fast, and helpers.data / helpers.cache can use these checks without an import cycle.
def _keras():
    from helpers._tf import keras

    return keras


def is_model(value) -> bool:
    """Whether ``value`` is a Keras model (for functions that take a model or something else)."""
    return isinstance(value, _keras().Model)


def model(value, name: str = "model", built: bool = False):
    """``value`` itself, if it is a Keras model (and, with ``built=True``, has an input shape)."""
    if not is_model(value):
        raise ValueError(f"{name} must be a Keras model, got {type(value).__name__}")
    if built and (not value.built or not value.inputs):
        raise ValueError(f"{name} {value.name!r} has no input shape yet: build it (e.g. start "
                         f"it with an InputLayer) before quantizing or converting it")
    return value


def sequential(value, name: str = "model", why: str = ""):
    """``value`` itself, if it is a ``keras.Sequential`` model (one chain of layers)."""
    if not isinstance(value, _keras().Sequential):
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be a keras.Sequential model{reason}, "
                         f"got {type(value).__name__}")
    return value


def dataset(data, name: str = "data"):
    """``data`` itself, if it is a :class:`helpers.data.Dataset`."""
    from helpers.data import Dataset  # see _keras

    if not isinstance(data, Dataset):
        raise ValueError(f"{name} must be a Dataset from helpers.data.load_dataset, "
                         f"got {type(data).__name__}")
    return data


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int, if it is an integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or (low is not None and value < low) or (high is not None and value > high):
        rule = _interval(low, high) if low is not None or high is not None else ""
        raise ValueError(f"{name} must be an integer{' ' + rule if rule else ''}, got {value!r}")
    return int(value)


def positive_int(value, name: str) -> int:
    """``value`` as an int, if it is an integer >= 1."""
    return integer(value, name, 1)


def epochs(value, name: str = "epochs", allow_zero: bool = False) -> int:
    """A number of passes over the training set: an integer >= 1 (>= 0 with ``allow_zero``)."""
    return integer(value, name, 0 if allow_zero else 1)


def number(value, name: str, low: float | None = None, high: float | None = None,
           include_low: bool = True, include_high: bool = True) -> float:
    """``value`` as a float, if it is a finite real number in the given range.

    ``number(s, "sparsity", 0, 1, include_high=False)`` raises
    ``ValueError("sparsity must be in [0, 1), got 1.5")`` for ``s = 1.5``.
    """
    rule = _interval(low, high, include_low, include_high)
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
        rule = rule if rule == "a number" else f"a number {rule}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    if not ((low is None or (value >= low if include_low else value > low))
            and (high is None or (value <= high if include_high else value < high))):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def fraction(value, name: str) -> float:
    """A fraction in [0, 1] (an accuracy, a mixing weight)."""
    return number(value, name, 0, 1)


def sparsity(value, name: str = "sparsity") -> float:
    """TFMOT's rule: a sparsity is a fraction in [0, 1) (pruning everything is not allowed)."""
    return number(value, name, 0, 1, include_high=False)


def learning_rate(value, name: str = "learning_rate") -> float:
    """An optimizer step size, in (0, 1)."""
    return number(value, name, 0, 1, include_low=False, include_high=False)


def one_of(value, name: str, choices: Iterable):
    """``value`` itself, if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def finite_array(values, name: str, dtype=np.float64, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a NumPy array of ``dtype`` (``None``: its own dtype), if it is numeric,
    finite and (unless ``allow_empty``) not empty."""
    try:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise TypeError
        if dtype is not None:
            array = array.astype(dtype, copy=False)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got "
                         f"{type(values).__name__}") from None
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (no NaN or inf), got "
                         f"{int(np.sum(~np.isfinite(array)))} non-finite values")
    return array

"""Argument checks shared by the technique modules: each raises a ValueError that names the
argument, what it must be, and the value given (the TFMOT ``_validate_*`` habit)."""
from __future__ import annotations

import numpy as np

from helpers.data import Dataset

__all__ = ["positive_int", "dataset", "model"]


def positive_int(value, name: str) -> int:
    """``value`` as an int, if it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def dataset(data) -> Dataset:
    """``data`` itself, if it is a :class:`helpers.data.Dataset`."""
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a Dataset from helpers.data.load_dataset, "
                         f"got {type(data).__name__}")
    return data


def model(value, name: str = "model"):
    """``value`` itself, if it is a Keras model."""
    from helpers._tf import keras  # TensorFlow loads on first use (see helpers._tf)

    if not isinstance(value, keras.Model):
        raise ValueError(f"{name} must be a Keras model, got {type(value).__name__}")
    return value

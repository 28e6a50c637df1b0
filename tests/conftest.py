"""Shared fixtures. Importing helpers first sets TF_USE_LEGACY_KERAS for every test."""
from pathlib import Path

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


DEMO_DECK = Path(__file__).parent / "fixtures" / "slides" / "demo.ipynb"


@pytest.fixture(scope="session")
def demo_deck(tmp_path_factory):
    """The demo notebook (a figure slide, notes, a formula, a quiz), executed and built into a
    deck as ``make slides`` does; shared by the slides and browser tests (built once)."""
    from helpers.course import slides

    decks, failures = slides.build([DEMO_DECK], tmp_path_factory.mktemp("slides"), jobs=1)
    assert not failures
    return decks[0]

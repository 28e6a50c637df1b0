import numpy as np
import pytest

from helpers import data


def test_mnist5k_split_shapes_and_range(mnist5k):
    assert mnist5k.x_train.shape == (4000, 28, 28, 1)
    assert mnist5k.x_test.shape == (1000, 28, 28, 1)
    assert mnist5k.x_train.dtype == np.float32
    assert 0.0 == mnist5k.x_train.min() and mnist5k.x_train.max() == 1.0
    assert mnist5k.input_shape == (28, 28, 1) and mnist5k.num_classes == 10
    # stratified: 100 test images per digit
    assert np.bincount(mnist5k.y_test).tolist() == [100] * 10


def test_digits_is_offline_and_small(digits):
    assert digits.x_train.shape == (1437, 8, 8, 1)
    assert digits.x_test.shape == (360, 8, 8, 1)
    assert digits.x_train.max() <= 1.0


def test_loading_is_deterministic(mnist5k):
    again = data.load_dataset("mnist5k")
    np.testing.assert_array_equal(again.x_train, mnist5k.x_train)
    np.testing.assert_array_equal(again.y_test, mnist5k.y_test)


def test_train_and_test_do_not_overlap(digits):
    train = {row.tobytes() for row in digits.x_train}
    overlap = sum(row.tobytes() in train for row in digits.x_test)
    assert overlap < 5  # load_digits itself holds a few identical images


@pytest.mark.parametrize("name", ["mnsit", "cifar10", "", 3])
def test_unknown_dataset_names_the_valid_ones(name):
    with pytest.raises(ValueError, match="mnist5k.*digits"):
        data.load_dataset(name)


def test_online_dataset_offline_gives_clear_error(monkeypatch):
    import tf_keras as keras

    def no_network():
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", no_network)
    with pytest.raises(data.DatasetUnavailableError, match="offline dataset: 'mnist5k'"):
        data.load_dataset("fashion_mnist")


@pytest.mark.parametrize("table", [data.model_growth, data.edge_boards, data.energy_costs])
def test_reference_tables_are_sourced(table):
    frame = table()
    assert len(frame) >= 5
    if "source" in frame:
        assert frame["source"].str.len().min() > 10


"""Tests for helpers._validate: every check returns the value and raises one message style,
"<name> must be <rule>, got <value>"."""
import numpy as np
import pytest
import tf_keras as keras

from helpers import _validate


def test_integer_checks_type_and_range():
    assert _validate.integer(np.int64(3), "bits", 2, 16) == 3
    assert _validate.positive_int(1, "epochs") == 1
    assert _validate.epochs(0, allow_zero=True) == 0
    for bad, message in ((1, r"bits must be an integer in \[2, 16\], got 1"),
                         (True, r"bits must be an integer in \[2, 16\], got True"),
                         (8.0, r"bits must be an integer in \[2, 16\], got 8.0")):
        with pytest.raises(ValueError, match=message):
            _validate.integer(bad, "bits", 2, 16)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        _validate.epochs(0)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0, got -1"):
        _validate.epochs(-1, allow_zero=True)


def test_numbers_name_the_interval_and_the_value():
    assert _validate.sparsity(np.float32(0.5)) == 0.5
    assert _validate.fraction(1, "alpha") == 1.0
    assert _validate.learning_rate(1e-3) == 1e-3
    with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 1\), got 1.5$"):
        _validate.sparsity(1.5)
    with pytest.raises(ValueError, match=r"^learning_rate must be in \(0, 1\), got 0$"):
        _validate.learning_rate(0)
    with pytest.raises(ValueError, match=r"^energy must be in \(0, 1\], got 0$"):
        _validate.number(0, "energy", 0, 1, include_low=False)
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got -1$"):
        _validate.number(-1, "temperature", 0, include_low=False)
    for bad in ("half", None, float("nan"), float("inf"), False):
        with pytest.raises(ValueError, match=r"^sparsity must be a number in \[0, 1\), got "):
            _validate.sparsity(bad)


def test_one_of_lists_the_choices():
    assert _validate.one_of("layer", "scope", ("layer", "global")) == "layer"
    with pytest.raises(ValueError, match="^scope must be one of 'layer', 'global', got 'all'$"):
        _validate.one_of("all", "scope", ("layer", "global"))


def test_finite_array():
    assert _validate.finite_array([1, 2], "x").dtype == np.float64
    assert _validate.finite_array(np.int8([1]), "x", dtype=None).dtype == np.int8
    assert _validate.finite_array([], "w", allow_empty=True).size == 0
    with pytest.raises(ValueError, match="x must not be empty"):
        _validate.finite_array([], "x")
    with pytest.raises(ValueError, match=r"x must be finite \(no NaN or inf\), got 1 "):
        _validate.finite_array([1.0, np.nan], "x")
    with pytest.raises(ValueError, match="x must be an array of numbers, got list"):
        _validate.finite_array(["a"], "x")


def test_models_and_datasets(digits):
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(2,)), keras.layers.Dense(1)])
    assert _validate.model(model, built=True) is model
    assert _validate.sequential(model) is model and _validate.is_model(model)
    assert not _validate.is_model(b"flatbuffer")
    assert _validate.dataset(digits) is digits
    with pytest.raises(ValueError, match="^teacher must be a Keras model, got str$"):
        _validate.model("lenet", "teacher")
    with pytest.raises(ValueError, match="has no input shape yet"):
        _validate.model(keras.Sequential([keras.layers.Dense(1)]), built=True)
    functional = keras.Model(model.inputs, model.outputs)
    with pytest.raises(ValueError, match=r"model must be a keras.Sequential model \(one chain"):
        _validate.sequential(functional, why="one chain of layers")
    with pytest.raises(ValueError, match="data must be a Dataset from helpers.data.load_dataset"):
        _validate.dataset((digits.x_train, digits.y_train))

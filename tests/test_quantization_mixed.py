"""helpers.quantization.mixed: sensitivity scan, mixed-precision plans, hardware-aware training
and ai-edge-quantizer recipes (taught in hardware_aware_training)."""
import numpy as np
import pandas as pd
import pytest

from helpers import measure, quantization
from helpers._tf import keras
from helpers.data import Dataset


@pytest.fixture(scope="module")
def tiny():
    """A small dense model trained for a few steps on separable synthetic data."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4, 4, 1)).astype(np.float32)
    y = (x.reshape(600, -1)[:, :8].sum(1) > 0).astype(np.int64)
    data = Dataset("synthetic", x[:400], y[:400], x[400:], y[400:], ["0", "1"])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4, 4, 1)),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu",
                                                                         name="hidden"),
                              keras.layers.Dense(2, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:400], y[:400], epochs=20, verbose=0)
    return model, data


def test_fake_quantize_layers_rounds_only_the_named_layer(tiny):
    model, _ = tiny
    copy = quantization.fake_quantize_layers(model, {"hidden": 2})
    hidden = copy.get_layer("hidden").get_weights()[0]
    assert max(len(np.unique(hidden[:, c])) for c in range(hidden.shape[1])) <= 3  # -1, 0, 1
    np.testing.assert_array_equal(copy.get_layer("logits").get_weights()[0],
                                  model.get_layer("logits").get_weights()[0])
    with pytest.raises(ValueError, match="no kernel for"):
        quantization.fake_quantize_layers(model, {"flatten": 4})
    with pytest.raises(ValueError, match="bits"):
        quantization.fake_quantize_layers(model, {"hidden": 0})


def test_scan_plan_and_bytes(tiny):
    model, data = tiny
    scan = quantization.sensitivity_scan(model, data, bits=(8, 2), cache=False)
    assert list(scan.index) == ["hidden", "logits"]
    # 8 bits changes no prediction here (measured drop 0.0); 2 bits changes some
    assert scan["8-bit drop"].abs().max() <= 1.0
    plan = quantization.mixed_precision_plan(scan, tolerance=100)
    assert plan == {"hidden": 2, "logits": 2}
    assert quantization.mixed_precision_plan(scan, 0, allowed=(8,)) == {"hidden": 8, "logits": 8}
    full = quantization.packed_weight_bytes(model, {"hidden": 8, "logits": 8})
    assert full == 16 * 32 + 4 * 32 + 4 * 32 + 32 * 2 + 4 * 2 + 4 * 2
    assert quantization.packed_weight_bytes(model, {"hidden": 4, "logits": 8}) == full - 16 * 16


def test_greedy_plan_fits_the_budget_and_lowers_the_big_layer_first():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(64,)),
                              keras.layers.Dense(64, name="big"), keras.layers.Dense(2,
                                                                                     name="small")])
    scan = pd.DataFrame({"8-bit drop": [0.0, 0.0], "4-bit drop": [0.5, 0.5],
                         "weights": [4096, 128]}, index=["big", "small"])
    full = quantization.packed_weight_bytes(model, {"big": 8, "small": 8})
    plan = quantization.greedy_plan(model, scan, full - 1000)
    assert plan == {"big": 4, "small": 8}  # same drop, far more bytes saved in `big`
    with pytest.raises(ValueError, match="below the smallest plan"):
        quantization.greedy_plan(model, scan, 10)


def test_qat_mixed_puts_kernels_on_their_grids(tiny):
    model, data = tiny
    trained = quantization.qat_mixed(model, data, {"hidden": 2, "logits": 4}, epochs=1)
    for name, bits in (("hidden", 2), ("logits", 4)):
        kernel = trained.get_layer(name).get_weights()[0]
        levels = max(len(np.unique(kernel[:, c])) for c in range(kernel.shape[1]))
        assert levels <= 2 ** bits - 1, (name, levels)


def test_aeq_writes_the_planned_bit_widths(tiny):
    model, _ = tiny
    flatbuffer = measure.to_tflite(model)
    outputs = quantization.tflite_layer_outputs(flatbuffer)
    assert set(outputs) == {"hidden", "logits"}
    mixed = quantization.quantize_with_aeq(flatbuffer, {"hidden": 4, "logits": 8})
    int8 = quantization.quantize_with_aeq(flatbuffer, {"hidden": 8, "logits": 8})
    # the hidden kernel's 512 weights: 512 bytes as int8, 256 as int4
    assert len(int8) - len(mixed) >= 200 and len(int8) < len(flatbuffer)
    with pytest.raises(ValueError, match="must be one of 4, 8"):
        quantization.quantize_with_aeq(flatbuffer, {"hidden": 2})
    with pytest.raises(ValueError, match="no conv or dense operator"):
        quantization.quantize_with_aeq(flatbuffer, {"nope": 8})


def test_best_under_budget_and_explorer():
    candidates = pd.DataFrame({"KB": [100.0, 40.0, 20.0], "accuracy %": [99.0, 98.5, 90.0]},
                              index=["big", "mid", "small"])
    assert quantization.best_under_budget(candidates, 50) == "mid"
    assert quantization.best_under_budget(candidates, 10) is None
    explorer = quantization.budget_explorer(candidates, [10, 50, 120])
    explorer.slider.value = 50.0
    assert "mid" in explorer.text
    explorer.slider.value = 10.0
    assert "no candidate fits" in explorer.text
    with pytest.raises(ValueError, match="no column"):
        quantization.best_under_budget(candidates, 50, column="bytes")


def test_plot_sensitivity_draws_one_bar_per_layer_and_bit_width():
    scan = pd.DataFrame({"8-bit drop": [0.0, 0.1], "2-bit drop": [30.0, 2.0],
                         "weights": [100, 10]}, index=["a", "b"])
    ax = quantization.plot_sensitivity(scan, 0.4)
    assert len(ax.patches) == 4 and ax.get_ylim()[1] >= 30

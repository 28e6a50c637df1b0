"""helpers.architectures: hand formulas against Keras, blocks, the search's model, depth
pruning, in-turn latencies and the budget explorer."""
import numpy as np
import pandas as pd
import pytest

from helpers import architectures as arch
from helpers import measure, models
from helpers._tf import keras


@pytest.mark.parametrize("k, c_in, c_out", [(3, 16, 32), (5, 1, 6), (1, 8, 8)])
def test_hand_counts_match_keras(k, c_in, c_out):
    x = keras.Input((14, 14, c_in))
    standard = keras.Model(x, keras.layers.Conv2D(c_out, k, padding="same")(x))
    separable = keras.Model(x, keras.layers.Conv2D(c_out, 1)(
        keras.layers.DepthwiseConv2D(k, padding="same")(x)))
    assert standard.count_params() == arch.conv_params(k, c_in, c_out)
    assert separable.count_params() == arch.depthwise_separable_params(k, c_in, c_out)
    assert arch.count_macs(standard) == arch.conv_macs(k, c_in, c_out, 14, 14)
    assert arch.count_macs(separable) == arch.depthwise_separable_macs(k, c_in, c_out, 14, 14)


def test_separable_saves_close_to_k_squared():
    ratio = arch.conv_macs(3, 64, 128, 8, 8) / arch.depthwise_separable_macs(3, 64, 128, 8, 8)
    assert 8.0 < ratio < 9.0  # 1 / (1/128 + 1/9) = 8.4
    with pytest.raises(ValueError, match="kernel must be an integer >= 1, got 0"):
        arch.conv_params(0, 1, 1)


def test_count_macs_of_lenet5_by_hand(lenet):
    # conv1 ('same') 28*28*25*6 + conv2 10*10*150*16 + 400*120 + 120*84 + 84*10
    assert arch.count_macs(lenet) == 117600 + 240000 + 48000 + 10080 + 840


@pytest.mark.parametrize("build", [arch.mobilenet_style, arch.squeezenet_style])
def test_blocks_build_logit_models_that_convert_to_tflite(build):
    model = build((28, 28, 1), 10)
    assert model.output_shape == (None, 10)
    assert measure.to_tflite(model)[4:8] == b"TFL3"


def test_search_candidate_shapes_and_checks():
    model = arch.search_candidate(width=8, depth=3, kernel=5, stride=2)
    assert model.get_layer("stem").kernel_size == (5, 5)
    assert model.get_layer("mb2_pw").filters == 32 and model.output_shape == (None, 10)
    with pytest.raises(ValueError, match="kernel must be one of 3, 5, got 4"):
        arch.search_candidate(kernel=4)


def test_remove_layers_keeps_the_weights_that_still_fit(lenet):
    shallow = arch.remove_layers(lenet, ["fc2"])
    assert [layer.name for layer in shallow.layers] == [
        "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "logits"]
    for name in ("conv1", "conv2", "fc1"):
        for a, b in zip(shallow.get_layer(name).get_weights(), lenet.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert shallow.get_layer("logits").kernel.shape == (120, 10)  # re-initialised
    with pytest.raises(ValueError, match="names must list layers"):
        arch.remove_layers(lenet, ["fc9"])


def test_latencies_are_measured_for_every_model():
    flat = measure.to_tflite(models.mlp())
    times = arch.latencies_ms({"a": flat, "b": flat}, repeats=2, runs=20)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())
    with pytest.raises(ValueError, match="non-empty dict"):
        arch.latencies_ms({})


def test_budget_explorer_names_the_best_fitting_candidate():
    table = pd.DataFrame({"arena KB": [2.5, 4.0, 7.0], "flash KB": [10.0, 12.0, 15.0],
                          "accuracy %": [85.0, 90.0, 95.0]}, index=["small", "mid", "big"])
    explorer = arch.budget_explorer(table, [2.0, 5.0, 8.0])
    explorer.slider.value = 5.0
    assert "2 of 3 fit" in explorer.labels.value and "mid" in explorer.labels.value
    explorer.slider.value = 2.0
    assert "no candidate fits" in explorer.labels.value
    explorer.slider.value = 8.0
    assert "big" in explorer.labels.value


def test_the_notebooks_hand_counts_agree_with_keras():
    """The lesson's by-hand table and its Keras layers give the same params and MACs."""
    from pathlib import Path

    import nbformat

    path = (Path(__file__).resolve().parent.parent / "lessons" / "deeper"
            / "efficient_architectures.ipynb")
    cells = {c.get("id"): c.source for c in nbformat.read(path, as_version=4).cells}
    namespace = {"pd": pd, "keras": keras, "architectures": arch}
    for cell_id in ("by-hand", "keras-check"):
        exec(compile(cells[cell_id], cell_id, "exec"), namespace)  # noqa: S102
    for name in ("standard", "separable"):
        model = namespace[name]
        assert (model.count_params(), arch.count_macs(model)) == namespace["by_hand"][name]

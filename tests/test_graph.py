"""helpers.graph: batch-norm folding, op lists, im2col (taught in graph_optimizations)."""
import numpy as np
import pytest

from helpers import graph, measure
from helpers._tf import keras


def _bn_model(after=False, seed=0):
    model = graph.bn_cnn((12, 12, 1), 3, filters=(4,), bn_after_activation=after)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # random BN statistics, so folding is not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4),
                               rng.normal(size=4), rng.uniform(0.1, 3, 4)])
    return model


def test_fold_batch_norm_matches_the_formula_and_keras():
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4)
    gamma, beta, mean = rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4)
    variance = rng.uniform(0.1, 2, 4)
    k, b = graph.fold_batch_norm(kernel, bias, gamma, beta, mean, variance, 1e-3)
    x = rng.normal(size=(5, 3, 3, 2))
    y = np.einsum("nhwc,hwco->no", x, kernel) + bias
    expected = gamma * (y - mean) / np.sqrt(variance + 1e-3) + beta
    np.testing.assert_allclose(np.einsum("nhwc,hwco->no", x, k) + b, expected, rtol=1e-10)


def test_fold_batch_norms_keeps_the_outputs_and_drops_the_layers():
    model = _bn_model()
    folded = graph.fold_batch_norms(model)
    x = np.random.default_rng(2).uniform(size=(16, 12, 12, 1)).astype(np.float32)
    # measured max difference 1e-6 on outputs of size ~1-10 (float32 rounding)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-4)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert len(folded.layers) == len(model.layers) - 1


def test_fold_batch_norms_refuses_what_cannot_fold():
    with pytest.raises(ValueError, match="keras.Sequential"):
        graph.fold_batch_norms(keras.Model(*(lambda i: (i, keras.layers.Dense(2)(i)))(
            keras.Input((3,)))))
    bad = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)),
                            keras.layers.Dense(3, activation="relu"),
                            keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="activation before the batch norm"):
        graph.fold_batch_norms(bad)
    with pytest.raises(ValueError, match="one value per output channel"):
        graph.fold_batch_norm(np.ones((3, 4)), None, np.ones(3), np.ones(4), np.ones(4), np.ones(4))


def test_converter_fuses_bn_and_relu_but_not_a_bn_after_the_relu():
    fused = graph.tflite_ops(measure.to_tflite(_bn_model()))
    assert list(fused["op"]) == ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]
    assert fused.loc[0, "fused activation"] == "RELU"  # the ReLU is fused, Dropout is gone
    unfused = graph.op_counts(graph.tflite_ops(measure.to_tflite(_bn_model(after=True))))
    assert unfused.get("MUL", 0) >= 1 and unfused.sum() > len(fused)
    tf_ops = graph.op_counts(graph.tf_graph_ops(_bn_model()))
    assert tf_ops["FusedBatchNormV3"] == 1 and tf_ops["Relu"] == 1


def test_im2col_matmul_is_the_keras_convolution():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
    for padding, stride in (("valid", 1), ("same", 1), ("same", 2), ("valid", 2)):
        layer = keras.layers.Conv2D(5, 3, strides=stride, padding=padding, activation="relu")
        expected = layer(x).numpy()
        np.testing.assert_allclose(graph.conv2d_as_matmul(layer, x), expected, atol=1e-5)
    assert graph.im2col(x, 3).shape == (2 * 7 * 7, 27)
    with pytest.raises(ValueError, match="kernel_size"):
        graph.im2col(x, 0)
    with pytest.raises(ValueError, match="Conv2D"):
        graph.conv2d_as_matmul(keras.layers.Dense(2), x)


def test_im2col_sweep_memory_grows_with_the_square_of_the_kernel():
    table = graph.im2col_sweep((1, 3), image=8, channels=2, filters=4, runs=2)
    assert table.loc[1, "im2col KB"] == pytest.approx(table.loc[1, "input KB"])
    assert table.loc[3, "im2col KB"] == pytest.approx(9 * table.loc[3, "input KB"])
    explorer = graph.im2col_explorer(table)
    explorer.slider.value = 3
    assert "3x3" in explorer.text and explorer.image.value


def test_copy_weights_by_name_and_builtin_latency():
    source = _bn_model()
    target = graph.copy_weights_by_name(source, graph.bn_cnn((12, 12, 1), 3, filters=(4,),
                                                             bn_after_activation=True))
    np.testing.assert_array_equal(target.get_layer("bn1").get_weights()[3],
                                  source.get_layer("bn1").get_weights()[3])
    assert graph.latency_builtin_ms(measure.to_tflite(target), runs=3) > 0

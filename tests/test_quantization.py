"""Tests for helpers.quantization, its explorer and plots, and the graded lab 2.

The from-scratch NumPy code is checked against its defining properties (round-trip error at
most half a step, 0 exact, distinct levels) and against the TFLite converter (the int8
kernels and per-channel scales stored in a real full-int8 flatbuffer, read back through
LiteRT). The expensive objects (LeNet-5 from the cache, its float32 and int8 flatbuffers)
are built once per module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tf_keras as keras

from helpers import measure, models
from helpers import quantization as qz

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def float_tflite(lenet):
    return measure.to_tflite(lenet)


@pytest.fixture(scope="module")
def int8_tflite(lenet, mnist5k):
    return qz.quantize_int8(lenet, mnist5k.x_train, num_samples=200)


@pytest.fixture(scope="module")
def digits_mlp(digits):
    """A small MLP on the 8x8 digits: seconds to train, for the slow (TFMOT) paths."""
    model = models.compile_model(models.mlp(digits.input_shape), 1e-2)
    models.train(model, digits, epochs=3, progress=False)
    return model


@pytest.fixture(scope="module")
def sweep(float_tflite, mnist5k):
    return qz.bitwidth_sweep(float_tflite, mnist5k, bits=(2, 3, 4, 8, 16))


def _accuracy(model, data) -> float:
    return measure.accuracy(model, data.x_test, data.y_test)


# ---------------------------------------------------------------------------- from scratch
def test_integer_range():
    assert qz.integer_range(8) == (-128, 127)
    assert qz.integer_range(8, symmetric=True) == (-127, 127)
    assert qz.integer_range(2, symmetric=True) == (-1, 1)  # ternary
    assert qz.integer_range(16) == (-32768, 32767)


@pytest.mark.parametrize("bits", [1, 17, 0, 2.5, True, "8"])
def test_bad_bits_are_rejected_clearly(bits):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got"):
        qz.integer_range(bits)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\]"):
        qz.fake_quantize(np.ones(3), bits)


def test_worked_example_of_the_lesson():
    scale, zero_point = qz.scale_zero_point(-1.0, 2.0, bits=8)
    assert scale == pytest.approx(3 / 255) and zero_point == -43
    x = np.array([-1.0, -0.37, 0.0, 0.73, 2.0])
    q = qz.quantize(x, scale, zero_point)
    assert q.dtype == np.int8 and q.tolist() == [-128, -74, -43, 19, 127]
    x_hat = qz.dequantize(q, scale, zero_point)
    assert x_hat[2] == 0.0  # zero is exact
    assert np.all(np.abs(x - x_hat) <= scale / 2 + 1e-9)


def test_scale_zero_point_special_ranges():
    assert qz.scale_zero_point(0.0, 6.0) == (pytest.approx(6 / 255), -128)  # ReLU6
    assert qz.scale_zero_point(-6.0, 0.0)[1] == 127
    assert qz.scale_zero_point(2.0, 3.0) == qz.scale_zero_point(0.0, 3.0)  # 0 included
    assert qz.scale_zero_point(0.0, 0.0) == (1.0, -128)
    assert qz.scale_zero_point(-1.0, 2.0, symmetric=True) == (pytest.approx(2 / 127), 0)
    scales, zeros = qz.scale_zero_point(np.array([-1.0, 0.0]), np.array([1.0, 4.0]), bits=4)
    assert scales == pytest.approx([2 / 15, 4 / 15]) and zeros.tolist() == [0, -8]  # -0.5 -> 0
    with pytest.raises(ValueError, match="x_min must be <= x_max"):
        qz.scale_zero_point(1.0, -1.0)
    with pytest.raises(ValueError, match="finite"):
        qz.scale_zero_point(0.0, np.inf)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis", [None, -1, 0])
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
def test_round_trip_error_is_at_most_half_a_step(bits, axis, symmetric):
    rng = np.random.default_rng(bits)
    x = rng.normal(0.2, 1.0, size=(7, 5, 6)) * rng.uniform(0.1, 3.0, size=6)
    scale, zero_point = qz.quantization_params(x, bits, symmetric, axis)
    q = qz.quantize(x, scale, zero_point, bits, symmetric, axis)
    qmin, qmax = qz.integer_range(bits, symmetric)
    assert q.dtype == (np.int8 if bits <= 8 else np.int16)
    assert q.min() >= qmin and q.max() <= qmax
    x_hat = qz.dequantize(q, scale, zero_point, axis)
    if axis is not None:
        view = [1] * x.ndim
        view[axis] = -1
        scale = np.reshape(scale, view)
    assert np.all(np.abs(x - x_hat) <= scale / 2 + 1e-5 * scale)


def test_values_outside_the_range_are_clipped():
    scale, zero_point = qz.scale_zero_point(-1.0, 1.0, bits=4)
    q = qz.quantize(np.array([-100.0, 100.0]), scale, zero_point, bits=4)
    assert q.tolist() == [-8, 7]


def test_per_channel_params_and_shape_checks():
    kernel = np.stack([np.linspace(-1, 1, 12), np.linspace(-0.01, 0.01, 12)], axis=-1)
    scales, zeros = qz.quantization_params(kernel, 8, symmetric=True, axis=-1)
    assert scales == pytest.approx([1 / 127, 0.01 / 127]) and not zeros.any()
    per_tensor = qz.fake_quantize(kernel, 4, axis=None)
    per_channel = qz.fake_quantize(kernel, 4, axis=-1)
    assert len(np.unique(per_tensor[:, 1])) == 1  # the small channel rounds to 0 entirely
    assert len(np.unique(per_channel[:, 1])) > 10
    with pytest.raises(ValueError, match=r"axis must be None .* integer in \[-2, 1\].*got 2"):
        qz.quantization_params(kernel, axis=2)
    with pytest.raises(ValueError, match="scale must have one value per channel"):
        qz.quantize(kernel, np.ones(3), 0, axis=-1)
    with pytest.raises(ValueError, match="scale must be one number when axis is None"):
        qz.quantize(kernel, np.ones(2), 0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        qz.quantize(kernel, 0.0, 0)
    with pytest.raises(ValueError, match="x must not be empty"):
        qz.quantization_params(np.array([]))


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_fake_quantize_levels_and_idempotence(bits):
    x = np.random.default_rng(0).normal(size=5000)
    fake = qz.fake_quantize(x, bits)  # symmetric per-tensor
    assert len(np.unique(fake)) <= 2 ** bits - 1
    assert np.abs(fake).max() == pytest.approx(np.abs(x).max(), rel=1e-6)
    np.testing.assert_allclose(qz.fake_quantize(fake, bits), fake, rtol=1e-6)  # float32


def test_quantization_error_metrics():
    x = np.array([1.0, -1.0, 2.0, -2.0])
    error = qz.quantization_error(x, x + 0.1)
    assert error["mse"] == pytest.approx(0.01) and error["max_abs"] == pytest.approx(0.1)
    assert error["sqnr_db"] == pytest.approx(10 * np.log10(2.5 / 0.01))
    assert qz.quantization_error(x, x)["sqnr_db"] == float("inf")
    uniform = np.random.default_rng(1).uniform(-1, 1, 100_000)
    sqnr = [qz.quantization_error(uniform, qz.fake_quantize(uniform, b))["sqnr_db"]
            for b in (6, 8, 10)]
    assert np.diff(sqnr) == pytest.approx([12.04, 12.04], abs=0.3)  # ~6 dB per bit
    with pytest.raises(ValueError, match="same shape"):
        qz.quantization_error(x, x[:2])


# ---------------------------------------------------------------------------- Keras models
def test_fake_quantize_model_rounds_kernels_only(lenet, mnist5k):
    original = [w.copy() for w in lenet.get_weights()]
    fake = qz.fake_quantize_model(lenet, bits=3, per_channel=True)
    assert all(np.array_equal(a, b) for a, b in zip(original, lenet.get_weights()))
    for layer in qz.quantizable_layers(lenet):
        kernel, bias = fake.get_layer(layer).get_weights()
        assert max(len(np.unique(kernel[..., c])) for c in range(kernel.shape[-1])) <= 7
        np.testing.assert_array_equal(bias, lenet.get_layer(layer).get_weights()[1])
    assert qz.quantizable_layers(lenet) == ["conv1", "conv2", "fc1", "fc2", "logits"]
    float_accuracy = _accuracy(lenet, mnist5k)
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): drops of 0.0 and 0.1 points, against 0.5
    assert _accuracy(qz.fake_quantize_model(lenet, 8), mnist5k) >= float_accuracy - 0.005


def test_fake_quantize_model_handles_depthwise_kernels():
    model = models.depthwise_cnn((12, 12, 1))
    fake = qz.fake_quantize_model(model, bits=2, per_channel=True)
    kernel = fake.get_layer("dw2").get_weights()[0]  # (3, 3, 16, 1): one channel per input
    assert all(len(np.unique(kernel[..., c, 0])) <= 3 for c in range(kernel.shape[2]))


def test_model_arguments_are_checked(mnist5k):
    with pytest.raises(ValueError, match="model must be a Keras model, got str"):
        qz.fake_quantize_model("lenet5", 8)
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="has no input shape yet"):
        qz.quantize_dynamic_range(unbuilt)
    with pytest.raises(ValueError, match="data must be a Dataset"):
        qz.bitwidth_sweep(models.mlp(), "mnist5k")


# ---------------------------------------------------------------------------- sweep
def test_sweep_matches_keras_fake_quantization(sweep, lenet, mnist5k):
    # the same rounding on two runtimes; measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1):
    # no difference at all
    assert sweep.attrs["float_accuracy"] == pytest.approx(_accuracy(lenet, mnist5k), abs=0.002)
    table = sweep.set_index(["bits", "granularity"])
    for bits, granularity in ((3, "per-tensor"), (3, "per-channel"), (2, "per-channel")):
        keras_model = qz.fake_quantize_model(lenet, bits, granularity == "per-channel")
        assert table.loc[(bits, granularity), "accuracy"] == pytest.approx(
            _accuracy(keras_model, mnist5k), abs=0.003)


def test_sweep_shape_and_trends(sweep):
    assert list(sweep.columns) == ["bits", "granularity", "levels", "mse", "sqnr_db",
                                   "accuracy", "accuracy drop"]
    assert len(sweep) == 10 and sweep.levels.max() == 2 ** 16 - 1
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): 16-bit drops 0.0 / 0.0 points,
    # 8-bit 0.0 / 0.1 at most, 2-bit per-tensor accuracy 16.3 / 10.0 %, slope 6.25 / 6.24 dB
    # per bit
    for _, rows in sweep.groupby("granularity"):
        assert rows.mse.is_monotonic_decreasing
        assert rows.set_index("bits").loc[16, "accuracy drop"] == pytest.approx(0, abs=0.11)
        assert rows.set_index("bits").loc[8, "accuracy drop"] <= 0.5
    table = sweep.set_index(["granularity", "bits"])
    for bits in (2, 3, 4):  # per-channel scales: less error at the same bit-width
        assert table.loc[("per-channel", bits), "mse"] < table.loc[("per-tensor", bits), "mse"]
    assert table.loc[("per-tensor", 2), "accuracy"] < 0.5  # 2-bit PTQ collapses
    slope = np.polyfit(sweep.bits, sweep.sqnr_db, 1)[0]
    assert slope == pytest.approx(6.02, abs=0.5)


def test_sweep_arguments_are_checked(float_tflite, mnist5k):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got 1"):
        qz.bitwidth_sweep(float_tflite, mnist5k, bits=(1, 8))
    with pytest.raises(ValueError, match="granularities must be one of"):
        qz.bitwidth_sweep(float_tflite, mnist5k, bits=(8,), granularities=("per-row",))
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        qz.bitwidth_sweep(b"not a model at all", mnist5k)


def test_fake_quantize_tflite_leaves_the_input_alone(float_tflite, int8_tflite):
    before = bytes(float_tflite)
    patched = qz.fake_quantize_tflite(float_tflite, 4)
    assert len(patched) == len(float_tflite) and patched != float_tflite == before
    interpreter = measure.tflite_interpreter(patched)
    names = {f"lenet5/{layer}/{op}" for layer, op in (
        ("conv1", "Conv2D"), ("conv2", "Conv2D"), ("fc1", "MatMul"), ("fc2", "MatMul"),
        ("logits", "MatMul"))}
    kernels = [interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()
               if d["name"] in names]
    assert sorted(k.size for k in kernels) == [150, 840, 2400, 10080, 48000]
    assert all(len(np.unique(k[c])) <= 15 for k in kernels for c in range(len(k)))
    with pytest.raises(ValueError, match="already quantized"):
        qz.fake_quantize_tflite(int8_tflite, 4)


# ---------------------------------------------------------------------------- TFLite PTQ
def test_ptq_variants_store_what_they_promise(lenet, float_tflite):
    dynamic = qz.quantize_dynamic_range(lenet)
    half = qz.quantize_float16(lenet)
    assert 3.3 < len(float_tflite) / len(dynamic) < 4.0
    assert 1.8 < len(float_tflite) / len(half) < 2.0
    interpreter = measure.tflite_interpreter(half)
    kernel_types = {d["dtype"] for d in interpreter.get_tensor_details()
                    if len(d["shape"]) >= 2 and "MatMul" in d["name"]}
    assert np.float16 in kernel_types
    # int8 kernels, except tensors under 1,024 weights (conv1: 150, logits: 840) stay float
    assert sorted(qz.tflite_quantized_weights(dynamic)) == [
        "lenet5/conv2/Conv2D", "lenet5/fc1/MatMul", "lenet5/fc2/MatMul"]
    assert measure.tflite_interpreter(dynamic).get_input_details()[0]["dtype"] == np.float32


def test_full_int8_meets_the_lesson_targets(lenet, mnist5k, float_tflite, int8_tflite):
    interpreter = measure.tflite_interpreter(int8_tflite)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    drop = _accuracy(float_tflite, mnist5k) - _accuracy(int8_tflite, mnist5k)
    # at most 0.5 points; measured (benchmark --seeds 0 1 2, 2 Dec 2026): paired drops of
    # 0.0, 0.1 and 0.1 points on seeds 0-2, against a 0.5-point target and an SE of 0.4; on
    # another machine (tools/test_margins.py, EDGE_AI_SEED 0 / 1): 0.0 and 0.2
    assert drop <= 0.005
    sizes_float, sizes_int8 = qz.size_breakdown(float_tflite), qz.size_breakdown(int8_tflite)
    assert sizes_float["weights"] / sizes_int8["weights"] >= 3.9  # the weight data: ~4x
    assert len(float_tflite) / len(int8_tflite) >= 3.4  # the file: ~3.5x (see the lesson)


def test_a_model_whose_weights_dominate_reaches_4x(lenet, mnist5k):
    """Issue 5's size target, as lesson 02 measures it: >= 3.9x within 0.5 points."""
    wide = models.pretrained("lenet5_x4", mnist5k, progress=False)
    table = qz.int8_size_ratios({"LeNet-5": lenet, "LeNet-5 x4": wide}, mnist5k)
    assert list(table.index) == [("LeNet-5", "per-channel"), ("LeNet-5", "per-tensor"),
                                 ("LeNet-5 x4", "per-channel"), ("LeNet-5 x4", "per-tensor")]
    best = table.loc[("LeNet-5 x4", "per-tensor")]
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): the four drops at most 0.0 / 0.2
    # points, x4 per-tensor 3.975x
    assert best["size ratio"] >= 3.9 and best["accuracy drop"] <= 0.5
    assert (table["accuracy drop"] <= 0.5).all()
    for name in ("LeNet-5", "LeNet-5 x4"):  # per-channel scales cost bytes
        per_channel, per_tensor = table.loc[(name, "per-channel")], table.loc[(name, "per-tensor")]
        assert per_channel["quantization parameters KB"] > 5 * per_tensor[
            "quantization parameters KB"]
        assert per_channel["size ratio"] < per_tensor["size ratio"] < 4
    # a bigger model hides the fixed bytes better
    assert table.loc[("LeNet-5 x4", "per-channel"), "size ratio"] > \
        table.loc[("LeNet-5", "per-channel"), "size ratio"]
    assert table.loc[("LeNet-5", "per-channel"), "float32 KB"] == pytest.approx(
        len(measure.to_tflite(lenet)) / 1024)


def test_int8_size_ratios_arguments_are_checked(lenet, mnist5k):
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        qz.int8_size_ratios({}, mnist5k)
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        qz.int8_size_ratios([lenet], mnist5k)
    with pytest.raises(ValueError, match="data must be a Dataset"):
        qz.int8_size_ratios({"LeNet-5": lenet}, "mnist5k")


def test_int8_without_per_channel_scales(lenet, mnist5k):
    flatbuffer = qz.quantize_int8(lenet, mnist5k.x_train[:50], num_samples=50,
                                  per_channel=False, int8_io=False)
    weights = qz.tflite_quantized_weights(flatbuffer)
    assert len(weights) == 5 and all(np.unique(w["scales"]).size == 1
                                     for w in weights.values())
    assert qz.size_breakdown(flatbuffer)["quantization parameters"] < 500  # one scale each
    interpreter = measure.tflite_interpreter(flatbuffer)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32


def test_int8_arguments_are_checked(lenet, mnist5k):
    with pytest.raises(ValueError, match="representative_data is empty"):
        qz.quantize_int8(lenet, np.zeros((0, 28, 28, 1)))
    with pytest.raises(ValueError, match=r"representative_data must have shape \(N,\) \+ "
                                         r"\(28, 28, 1\), got \(5, 28, 28\)"):
        qz.quantize_int8(lenet, np.zeros((5, 28, 28)))
    with pytest.raises(ValueError, match=r"num_samples must be an integer in \[1, 10\], got 11"):
        qz.quantize_int8(lenet, mnist5k.x_train[:10], num_samples=11)


def test_unconvertible_model_gives_a_clear_error():
    import tensorflow as tf

    svd = keras.Sequential([keras.layers.InputLayer(input_shape=(4, 4)),
                            keras.layers.Lambda(lambda x: tf.linalg.svd(x, compute_uv=False))])
    with pytest.raises(ValueError, match=r"TFLite cannot convert model .* to dynamic-range "
                                         r"int8: .*Svd"):
        qz.quantize_dynamic_range(svd)


def test_tflite_weights_are_our_symmetric_per_channel_int8(lenet, int8_tflite):
    """Read the int8 kernels and scales straight from LiteRT's tensor details."""
    interpreter = measure.tflite_interpreter(int8_tflite)
    details = {d["name"]: d for d in interpreter.get_tensor_details()}
    compared = 0
    for layer in qz.quantizable_layers(lenet):
        kernel = np.moveaxis(lenet.get_layer(layer).get_weights()[0], -1, 0)  # out first
        name = next(n for n, d in details.items() if d["dtype"] == np.int8
                    and f"/{layer}/" in n and tuple(d["shape"]) == kernel.shape)
        stored = interpreter.get_tensor(details[name]["index"]).astype(np.int32)
        params = details[name]["quantization_parameters"]
        assert params["quantized_dimension"] == 0 and not params["zero_points"].any()
        bound = np.abs(kernel).reshape(len(kernel), -1).max(axis=1)
        np.testing.assert_allclose(params["scales"], bound / 127, rtol=1e-6)
        scales, _ = qz.quantization_params(kernel, 8, symmetric=True, axis=0)
        ours = qz.quantize(kernel, scales, 0, 8, symmetric=True, axis=0).astype(np.int32)
        assert np.abs(ours - stored).max() <= 1  # off-by-one rounding at most...
        assert np.mean(ours != stored) <= 0.001  # ...on a tiny fraction
        compared += kernel.size
    assert compared == 61_470


def test_agreement_and_quantized_weights_helpers(lenet, float_tflite, int8_tflite):
    table = qz.agreement_with_tflite(lenet, int8_tflite)
    assert list(table.index) == qz.quantizable_layers(lenet)
    assert table["same codes %"].min() >= 99.9 and table["max code difference"].max() <= 1
    assert table["max scale rel. difference"].max() < 1e-5
    assert table["weights"].sum() == 61_470
    weights = qz.tflite_quantized_weights(int8_tflite)
    assert {w["axis"] for w in weights.values()} == {0}
    assert qz.tflite_quantized_weights(float_tflite) == {}
    with pytest.raises(ValueError, match="no int8 kernel"):
        qz.agreement_with_tflite(lenet, float_tflite)


def test_size_breakdown_adds_up(float_tflite, int8_tflite):
    for flatbuffer in (float_tflite, int8_tflite):
        parts = qz.size_breakdown(flatbuffer)
        assert sum(v for k, v in parts.items() if k != "total") == parts["total"]
        assert parts["total"] == len(flatbuffer) and parts["graph and metadata"] > 0
    assert qz.size_breakdown(float_tflite)["quantization parameters"] == 0
    assert qz.size_breakdown(float_tflite)["weights"] >= 61_706 * 4
    int8 = qz.size_breakdown(int8_tflite)
    assert 61_470 + 4 * 236 <= int8["weights"] < 61_470 + 4 * 236 + 64
    assert int8["quantization parameters"] >= 12 * 2 * 236  # kernels and biases, per channel
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        qz.size_breakdown(b"12345678")


def test_evaluate_tflite_from_bytes_and_path(tmp_path, digits, digits_mlp):
    flatbuffer = qz.quantize_int8(digits_mlp, digits.x_train, num_samples=100)
    path = tmp_path / "mlp_int8.tflite"
    path.write_bytes(flatbuffer)
    from_path = qz.evaluate_tflite(path, digits, runs=10)
    from_bytes = qz.evaluate_tflite(flatbuffer, digits, name="bytes", runs=10)
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): 91.9 / 93.3 %
    assert from_path.name == "mlp_int8" and from_path.accuracy == from_bytes.accuracy > 0.7
    assert from_path.tflite_bytes == len(flatbuffer)
    with pytest.raises(ValueError, match="does not exist"):
        qz.evaluate_tflite(tmp_path / "missing.tflite", digits)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        qz.evaluate_tflite(b"\x00" * 64, digits)


# ---------------------------------------------------------------------------- QAT
def test_qat_ste_recovers_two_bit_weights(lenet, mnist5k):
    ptq = _accuracy(qz.fake_quantize_model(lenet, 2), mnist5k)
    qat = qz.qat_ste(lenet, mnist5k, bits=2, epochs=1)
    for kernel in measure.kernels(qat).values():
        assert max(len(np.unique(kernel[..., c])) for c in range(kernel.shape[-1])) <= 3
    accuracy = _accuracy(qat, mnist5k)
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): 2-bit PTQ 30.3 / 26.1 %, one epoch
    # of QAT 91.8 / 94.8 %; 85 % leaves twice the spread between the two below the lower one
    assert ptq < 0.6 and accuracy > 0.85 and accuracy > ptq + 0.3
    np.testing.assert_array_equal(lenet.get_weights()[0],
                                  models.pretrained("lenet5", mnist5k).get_weights()[0])


def test_qat_tfmot_8bit_converts_to_an_integer_model(digits_mlp, digits):
    qat = qz.qat_tfmot(digits_mlp, digits, epochs=1)
    assert any(type(layer).__name__.startswith("QuantizeWrapper") for layer in qat.layers)
    flatbuffer = qz.quantize_dynamic_range(qat)  # no representative data: ranges learned
    interpreter = measure.tflite_interpreter(flatbuffer)
    types = {d["name"]: d["dtype"] for d in interpreter.get_tensor_details()}
    assert len(qz.tflite_quantized_weights(flatbuffer)) == 2  # hidden and logits kernels
    assert sum(t == np.int8 for t in types.values()) >= 5  # activations are int8 too
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): +1.1 and 0.0 points against the
    # float MLP
    assert _accuracy(flatbuffer, digits) >= _accuracy(digits_mlp, digits) - 0.03


def test_qat_tfmot_low_bit_and_arguments(digits_mlp, digits):
    model = digits_mlp
    qat = qz.qat_tfmot(model, digits, weight_bits=4, activation_bits=8, epochs=2,
                       learning_rate=1e-3)
    # measured (tools/test_margins.py, EDGE_AI_SEED 0 / 1): 94.2 / 94.4 %
    assert _accuracy(qat, digits) > 0.8
    with pytest.raises(ValueError, match=r"weight_bits must be an integer in \[2, 8\], got 9"):
        qz.qat_tfmot(model, digits, weight_bits=9)
    with pytest.raises(ValueError, match=r"learning_rate must be in \(0, 1\), got 0"):
        qz.qat_ste(model, digits, learning_rate=0)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        qz.qat_ste(model, digits, epochs=0)


# ---------------------------------------------------------------------------- explorer, plots
def test_bitwidth_explorer_answers_from_the_sweep(sweep, lenet):
    from helpers import widgets

    kernel = lenet.get_layer("fc1").get_weights()[0]
    explorer = widgets.bitwidth_explorer(sweep, kernel, layer="fc1")
    first = explorer.current.image.value
    assert explorer.toggle.value == "per-tensor" and explorer.slider.value == 2
    times = []
    for bits in (3, 4, 8, 16, 2):
        explorer.slider.value = bits
        times.append(explorer.current.last_update_ms)
        row = sweep.set_index(["granularity", "bits"]).loc[("per-tensor", bits)]
        assert f"{100 * row['accuracy']:.1f} %" in explorer.text
        assert f"{bits} bits" in explorer.text
    assert explorer.current.image.value == first  # back at 2 bits: the cached frame
    explorer.slider.value = 4
    four_per_tensor = explorer.current.image.value
    explorer.toggle.value = "per-channel"
    assert explorer.slider.value == 4 and "per-channel" in explorer.text
    assert explorer.current.image.value != four_per_tensor  # the picture changed
    assert np.median(times) < 200, f"slider moves took {times} ms"
    assert "per-channel, 4 bits" in explorer._repr_mimebundle_()["text/plain"]
    with pytest.raises(ValueError, match="sweep must be a DataFrame"):
        widgets.bitwidth_explorer(pd.DataFrame({"bits": [2]}), kernel)
    with pytest.raises(ValueError, match="kernel must have >= 2 dimensions"):
        widgets.bitwidth_explorer(sweep, np.ones(3))


def test_quantization_plots():
    import matplotlib.pyplot as plt

    from helpers import plots

    weights = np.random.default_rng(0).normal(0, 0.1, (50, 8))
    fake = qz.fake_quantize(weights, 3, axis=-1)
    ax = plots.quantization_grid(weights, fake, {"grid": np.arange(-3, 4) * 0.1})
    assert ax.get_yscale() == "log" and len(ax.collections) == 1  # one set of grid lines
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["float32", "quantized",
                                                                   "grid"]
    ax = plots.accuracy_vs_bits([2, 4, 8], {"per-tensor": [10, 90, 98]}, baseline=98.4,
                                mark=4)
    assert len(ax.lines) == 3 and ax.get_xlabel() == "bits per weight"
    ratios = pd.Series([3.5, 3.9], index=pd.MultiIndex.from_tuples([("a", "per-channel"),
                                                                    ("b", "per-tensor")]))
    ax = plots.size_ratios(ratios)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a / per-channel", "b / per-tensor"]
    assert [t.get_text() for t in ax.texts] == ["3.50x", "3.90x"]
    assert ax.lines[0].get_xdata()[0] == 4.0
    plt.close("all")


# ---------------------------------------------------------------------------- the lab
def test_lab2_solution_scores_full_marks_and_the_untouched_lab_zero():
    from helpers.course import grading

    solutions = REPO / "solutions"
    problems = grading.check_labs(solutions, REPO / "labs")
    assert [p for p in problems if "lab2_quantization" in p] == []
    solution = grading.grade(solutions / "lab2_quantization.ipynb", solutions, timeout=300)
    assert solution.error == "" and solution.max_score == 13
    assert solution.score == solution.max_score, grading.format_result(solution)
    assert [cell.grade_id for cell in solution.needs_manual] == ["why_int8"]
    lab = grading.grade(REPO / "labs" / "lab2_quantization.ipynb", solutions, timeout=300)
    assert lab.error == "" and lab.score == 0 and lab.max_score == 13
    assert all(cell.status == "failed" for cell in lab.cells if cell.kind == "auto")

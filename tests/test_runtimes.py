"""helpers.runtimes: ONNX Runtime (default install) and PyTorch / ExecuTorch (the extra).

The PyTorch tests need the ``pytorch`` extra. Without it they are skipped, unless
``EDGE_AI_REQUIRE_PYTORCH=1`` (set by ``.ci/run``, which installs the extra), which turns the
skip into a failure: a missing extra in CI is never counted as a pass.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

from helpers import data, measure, models, runtimes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "lessons" / "deeper" / "other_runtimes.ipynb"


@pytest.fixture(scope="module")
def mnist():
    ds = data.load_dataset("mnist5k")
    return ds, models.pretrained("lenet5", ds, seed=0, progress=False)


@pytest.fixture(scope="module")
def untrained():
    models.set_seed(0)
    return models.lenet5()


@pytest.fixture(scope="module")
def lenet_onnx(mnist):
    return runtimes.to_onnx(mnist[1])


def _cell(cell_id: str) -> str:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return next(cell.source for cell in notebook.cells if cell.get("id") == cell_id)


# ---------------------------------------------------------------------------- ONNX
def test_onnx_model_computes_the_keras_logits(untrained):
    x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    onnx_model = runtimes.to_onnx(untrained)
    # measured: largest difference 1e-5 (float32 rounding); a wrong layout gives > 0.01
    assert np.abs(runtimes.predict_onnx(onnx_model, x) - untrained(x).numpy()).max() < 1e-4
    ops = runtimes.onnx_ops(onnx_model)
    assert ops["Conv"] == 2 and ops["MatMul"] == 3 and list(ops.values()) == sorted(
        ops.values(), reverse=True)


def test_the_notebooks_tf2onnx_cell_gives_the_helpers_model(mnist, lenet_onnx):
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    ds, lenet = mnist
    namespace = {"ds": ds, "lenet": lenet, "np": np, "tf": tf, "tf2onnx": tf2onnx, "ort": ort,
                 "keras_logits": lenet.predict(ds.x_test, verbose=0)}
    exec(compile(_cell("tf2onnx"), "other_runtimes#tf2onnx", "exec"), namespace)
    assert np.array_equal(namespace["onnx_logits"], runtimes.predict_onnx(lenet_onnx, ds.x_test))
    assert abs(len(namespace["lenet_onnx"]) - len(lenet_onnx)) < 100  # same graph and weights


def test_onnx_runtime_int8_quantization_shrinks_and_keeps_accuracy(mnist, lenet_onnx):
    ds, _ = mnist
    dynamic = runtimes.quantize_onnx_dynamic(lenet_onnx)
    static = runtimes.quantize_onnx_static(lenet_onnx, ds.x_train[:200])
    assert "DynamicQuantizeLinear" in runtimes.onnx_ops(dynamic)
    assert "QuantizeLinear" in runtimes.onnx_ops(static)
    float_accuracy = np.mean(runtimes.predict_onnx(lenet_onnx, ds.x_test).argmax(1) == ds.y_test)
    for model in (dynamic, static):
        # measured: 244 KB -> 70 KB (dynamic) and 75 KB (static), ratio 0.29-0.31
        assert len(model) < 0.35 * len(lenet_onnx)
        accuracy = np.mean(runtimes.predict_onnx(model, ds.x_test).argmax(1) == ds.y_test)
        # measured (seed 0): drops of 0.0 and 0.3 points, SE 0.4 points
        assert accuracy > float_accuracy - 0.012


def test_calibration_reader_hands_out_each_image_once():
    images = np.zeros((3, 28, 28, 1), np.float32)
    reader = runtimes.ImageCalibrationReader(images, "image")
    batches = iter(reader.get_next, None)
    assert [b["image"].shape for b in batches] == [(1, 28, 28, 1)] * 3
    reader.rewind()
    assert reader.get_next() is not None


def test_onnx_latency_is_a_positive_median(lenet_onnx):
    assert runtimes.latency_onnx_ms(lenet_onnx, runs=5, warmup=1) > 0


def test_bad_arguments_raise_clear_errors(untrained):
    with pytest.raises(ValueError, match="model must be a Keras model"):
        runtimes.to_onnx("lenet.h5")
    with pytest.raises(ValueError, match="must be ONNX bytes"):
        runtimes.predict_onnx("model.onnx", np.zeros((1, 28, 28, 1)))
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        runtimes.onnx_session(b"not a model")
    with pytest.raises(ValueError, match=r"batch of images \(N, H, W, C\)"):
        runtimes.ImageCalibrationReader(np.zeros((28, 28)))
    with pytest.raises(ValueError, match="same length"):
        runtimes.deployment_row("LiteRT", 10, np.zeros((3, 10)), np.zeros(2), 0.1)
    with pytest.raises(ValueError, match="columns 'KB'"):
        runtimes.runtime_explorer(__import__("pandas").DataFrame({"a": [1]}))


def test_deployment_row_and_explorer(mnist):
    import pandas as pd

    ds, _ = mnist
    logits = np.eye(10)[ds.y_test]
    row = runtimes.deployment_row("test", 2048, logits, ds.y_test, 0.5)
    assert row["KB"] == 2.0 and row["accuracy %"] == 100.0 and row["± SE"] == 0.0
    wrong = runtimes.deployment_row("test", 1024, np.roll(logits, 1, axis=1), ds.y_test, 1.0)
    table = pd.DataFrame({"a": row, "b": wrong}).T
    explorer = runtimes.runtime_explorer(table)
    first = explorer.image.value
    explorer.slider.value = "b"
    assert "b" in explorer.text and "-100.0 points" in explorer.text
    assert explorer.image.value != first


# ---------------------------------------------------------------------------- PyTorch
def _require_pytorch():
    if not (runtimes.available()["torch"] and runtimes.available()["executorch"]):
        if os.environ.get("EDGE_AI_REQUIRE_PYTORCH") == "1":
            pytest.fail(f"EDGE_AI_REQUIRE_PYTORCH=1 but the pytorch extra is missing: "
                        f"{runtimes.INSTALL_PYTORCH}", pytrace=False)
        pytest.skip(f"the pytorch extra is not installed ({runtimes.INSTALL_PYTORCH})")
    runtimes.quiet_pytorch()


def test_torch_twin_computes_the_keras_logits(untrained):
    _require_pytorch()
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    net = runtimes.torch_lenet5(untrained)
    # measured: 1e-5; without the flatten reordering the difference is ~0.1
    assert np.abs(runtimes.predict_torch(net, x) - untrained(x).numpy()).max() < 1e-4
    lite = runtimes.load_torch_mobile(runtimes.to_torch_mobile(net))
    import torch

    with torch.inference_mode():
        mobile = lite(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(mobile - untrained(x).numpy()).max() < 1e-4


def test_torch_twin_refuses_other_architectures():
    _require_pytorch()
    with pytest.raises(ValueError, match="helpers.models.lenet5 model"):
        runtimes.torch_lenet5(models.mlp())


def test_torch_dynamic_quantization_keeps_accuracy(mnist):
    _require_pytorch()
    ds, lenet = mnist
    net = runtimes.torch_lenet5(lenet)
    int8 = runtimes.quantize_torch_dynamic(net)
    assert "quantized" in type(int8[7]).__module__ and "quantized" not in type(net[7]).__module__
    # measured: 245 KB -> 74 KB; accuracy unchanged (98.7 %, seed 0)
    assert runtimes.torch_bytes(int8) < 0.35 * runtimes.torch_bytes(net)
    drop = measure.accuracy(lenet, ds.x_test, ds.y_test) - np.mean(
        runtimes.predict_torch(int8, ds.x_test).argmax(1) == ds.y_test)
    assert drop < 0.012


def test_executorch_program_runs_the_same_model(untrained):
    _require_pytorch()
    x = np.random.default_rng(2).random((4, 28, 28, 1), dtype=np.float32)
    program = runtimes.to_executorch(runtimes.torch_lenet5(untrained), xnnpack=False)
    assert program[4:8] == b"ET12"  # the .pte file identifier
    assert np.abs(runtimes.predict_executorch(program, x) - untrained(x).numpy()).max() < 1e-4
    assert runtimes.latency_executorch_ms(program, runs=3, warmup=1) > 0
    with pytest.raises(ValueError, match="not a valid ExecuTorch program"):
        runtimes.predict_executorch(b"0000ET12 but no program", x)


def test_the_notebooks_quantization_cell_gives_the_helpers_files(mnist, lenet_onnx):
    ds, _ = mnist
    namespace = {"ds": ds, "lenet_onnx": lenet_onnx, "runtimes": runtimes,
                 "tempfile": __import__("tempfile"), "Path": Path}
    exec(compile(_cell("ort-quantize"), "other_runtimes#ort-quantize", "exec"), namespace)
    assert namespace["onnx_dynamic"] == runtimes.quantize_onnx_dynamic(lenet_onnx)
    static = runtimes.quantize_onnx_static(lenet_onnx, ds.x_train[:200])
    assert abs(len(namespace["onnx_static"]) - len(static)) < 100
    x = ds.x_test[:200]
    assert np.array_equal(runtimes.predict_onnx(namespace["onnx_static"], x).argmax(1),
                          runtimes.predict_onnx(static, x).argmax(1))

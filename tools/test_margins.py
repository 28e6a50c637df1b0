"""Measure the training-dependent quantities the test suite puts thresholds on, under this run's
``EDGE_AI_SEED``, so that each threshold's comment can cite measured spreads.

    EDGE_AI_SEED=0 .venv/bin/python tools/test_margins.py   # then 1, 2, 3

Each line is ``name: value`` with the test it feeds and that test's threshold. Models come from
(and go to) the course cache, as in the tests: LeNet-5 and LeNet-5 x4 (``pretrained``, seed 0
shifted by ``EDGE_AI_SEED``), the digits MLP and the small untrained TinyML CNN of the tests.
``labs`` runs the solution notebooks of labs 1, 2, 5 and 6 in a kernel and reads the
accuracies their hidden tests compare.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import helpers  # noqa: E402,F401
from helpers import cache, data, measure, models, quantization as qz, tinyml  # noqa: E402


def accuracy(model, ds) -> float:
    return measure.accuracy(model, ds.x_test, ds.y_test)


def quantization_margins(ds, digits) -> dict[str, float]:
    lenet = models.pretrained("lenet5", ds, progress=False)
    out = {"lenet5 accuracy": accuracy(lenet, ds)}
    # test_fake_quantize_model_rounds_kernels_only: drop <= 0.005
    out["fake-quant 8-bit drop"] = (out["lenet5 accuracy"]
                                    - accuracy(qz.fake_quantize_model(lenet, 8), ds))
    # test_sweep_*: 16-bit |drop| <= 0.11 and 8-bit drop <= 0.5 (points), 2-bit per-tensor < 0.5
    float_tflite = measure.to_tflite(lenet)
    sweep = qz.bitwidth_sweep(float_tflite, ds, bits=(2, 3, 4, 8, 16))
    table = sweep.set_index(["granularity", "bits"])
    for granularity in ("per-tensor", "per-channel"):
        for bits in (8, 16):
            out[f"sweep {granularity} {bits}-bit drop (points)"] = float(
                table.loc[(granularity, bits), "accuracy drop"])
    out["sweep per-tensor 2-bit accuracy"] = float(table.loc[("per-tensor", 2), "accuracy"])
    out["sweep sqnr slope (dB/bit)"] = float(np.polyfit(sweep.bits, sweep.sqnr_db, 1)[0])
    out["sweep float accuracy - keras"] = abs(sweep.attrs["float_accuracy"] - out["lenet5 accuracy"])
    out["sweep vs keras fake-quant, max |difference|"] = max(
        abs(float(table.loc[(g, b), "accuracy"])
            - accuracy(qz.fake_quantize_model(lenet, b, g == "per-channel"), ds))
        for b, g in ((3, "per-tensor"), (3, "per-channel"), (2, "per-channel")))
    # test_full_int8_meets_the_lesson_targets (<= 0.005) and lab 2 (<= 0.01)
    int8 = qz.quantize_int8(lenet, ds.x_train, num_samples=200)
    out["full int8 drop"] = accuracy(float_tflite, ds) - accuracy(int8, ds)
    out["full int8 same codes % (min over layers)"] = float(
        qz.agreement_with_tflite(lenet, int8)["same codes %"].min())
    # test_a_model_whose_weights_dominate_reaches_4x: every drop <= 0.5 points
    wide = models.pretrained("lenet5_x4", ds, progress=False)
    ratios = qz.int8_size_ratios({"LeNet-5": lenet, "LeNet-5 x4": wide}, ds)
    for (name, granularity), row in ratios.iterrows():
        out[f"int8_size_ratios {name} {granularity} drop (points)"] = float(row["accuracy drop"])
    out["int8_size_ratios LeNet-5 x4 per-tensor size ratio"] = float(
        ratios.loc[("LeNet-5 x4", "per-tensor"), "size ratio"])
    # test_qat_ste_recovers_two_bit_weights: ptq < 0.6, qat > 0.85, qat > ptq + 0.3
    out["2-bit PTQ accuracy"] = accuracy(qz.fake_quantize_model(lenet, 2), ds)
    out["2-bit QAT (STE, 1 epoch) accuracy"] = accuracy(qz.qat_ste(lenet, ds, bits=2, epochs=1), ds)
    # the digits MLP of test_quantization (3 epochs at 1e-2)
    mlp = models.compile_model(models.mlp(digits.input_shape), 1e-2)
    models.train(mlp, digits, epochs=3, progress=False)
    out["digits mlp accuracy"] = accuracy(mlp, digits)
    out["digits mlp int8 accuracy (> 0.7)"] = qz.evaluate_tflite(
        qz.quantize_int8(mlp, digits.x_train, num_samples=100), digits, runs=10).accuracy
    qat8 = qz.qat_tfmot(mlp, digits, epochs=1)
    out["digits QAT 8-bit TFLite - mlp (>= -0.03)"] = (
        accuracy(qz.quantize_dynamic_range(qat8), digits) - out["digits mlp accuracy"])
    out["digits QAT 4-bit accuracy (> 0.8)"] = accuracy(
        qz.qat_tfmot(mlp, digits, weight_bits=4, activation_bits=8, epochs=2,
                     learning_rate=1e-3), digits)
    return out


def tinyml_margins(ds) -> dict[str, float]:
    from test_tinyml import _small_cnn  # the tests' own model, untrained, seeded

    cnn = _small_cnn()
    int8 = qz.quantize_int8(cnn, ds.x_train, 50)
    compared = tinyml.compare_runtimes(int8, ds.x_test[:60])
    report = tinyml.evaluate_micro(int8, ds, "tiny", limit=50)
    expected = np.mean(measure.predict_tflite(int8, ds.x_test[:50]).argmax(-1) == ds.y_test[:50])
    return {"tflm vs litert same prediction (>= 0.98)": float(compared["same_prediction"]),
            "tflm vs litert accuracy difference (<= 0.02)": abs(float(report.accuracy - expected))}


# lab -> (the accuracy its hidden test checks, the reference it is compared with)
LAB_ACCURACIES = {"lab1_pruning": ("tuned_accuracy", "baseline_accuracy"),
                  "lab2_quantization": ("int8_accuracy", "float_accuracy"),
                  "lab5_low_rank": ("compact_accuracy", "baseline_accuracy"),
                  "lab6_lottery_ticket": ("ticket_accuracy", "dense_accuracy")}


def lab_margins() -> dict[str, float]:
    """Run each solution notebook; its accuracy drop (points) against the hidden test's budget."""
    import nbformat
    from nbclient import NotebookClient

    solutions = Path(__file__).resolve().parent.parent / "solutions"
    out = {}
    for lab, (accuracy_name, reference_name) in LAB_ACCURACIES.items():
        notebook = nbformat.read(solutions / f"{lab}.ipynb", as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(
            f"print(100 * ({reference_name} - {accuracy_name}))"))
        NotebookClient(notebook, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": str(solutions)}}).execute()
        out[f"{lab} drop (points)"] = float(notebook.cells[-1].outputs[0]["text"])
    return out


if __name__ == "__main__":
    ds, digits = data.load_dataset("mnist5k"), data.load_dataset("digits")
    parts = sys.argv[1:] or ["quantization", "tinyml", "labs"]
    result = {"EDGE_AI_SEED": cache.seed_offset()}
    if "tinyml" in parts:
        result.update(tinyml_margins(ds))
    if "quantization" in parts:
        result.update(quantization_margins(ds, digits))
    if "labs" in parts:
        result.update(lab_margins())
    for name, value in result.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    out = os.environ.get("MARGINS_JSON")
    if out:
        Path(out).write_text(json.dumps(result, indent=1))

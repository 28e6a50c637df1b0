"""Tests for helpers.tinyml: C export (compiled with the system compiler), TFLM arena and runs,
the operator check against the installed TFLM, the board fit check, the CLI and lab 4.

Models here are small and untrained (the behaviour under test does not depend on accuracy),
so the whole file runs in well under a minute; only the lab test runs notebooks.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers  # noqa: F401
import tf_keras as keras

from helpers import measure, models, quantization, tinyml
from helpers.course import tinyml as tinyml_cli

REPO = Path(__file__).resolve().parent.parent
COMPILER = shutil.which("g++") or shutil.which("c++")


PROBE = """
import sys
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
try:
    runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
    print("ok")
except RuntimeError as error:
    print("fail", error)
"""


def _allocates(path: Path, arena: int) -> bool:
    """Whether TFLM allocates the model in ``arena`` bytes, asked in a child process
    (TFLM's Python runtime may crash instead of failing on a too-small arena)."""
    run = subprocess.run([sys.executable, "-c", PROBE, str(path), str(arena)],
                         capture_output=True, text=True, timeout=120)
    return run.returncode == 0 and run.stdout.startswith("ok")


def _small_cnn(activation: str = "relu") -> keras.Model:
    models.set_seed(0)
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28, 1)),
        keras.layers.Conv2D(4, 5, activation=activation),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(8, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


@pytest.fixture(scope="module")
def cnn():
    return _small_cnn()


@pytest.fixture(scope="module")
def int8_model(cnn, mnist5k):
    return quantization.quantize_int8(cnn, mnist5k.x_train, 50)


@pytest.fixture(scope="module")
def float_model(cnn):
    return measure.to_tflite(cnn)


@pytest.fixture(scope="module")
def gelu_model():
    """A float model with GELU, which TFLite supports and TFLM (this build) does not."""
    return measure.to_tflite(_small_cnn("gelu"))


# ---------------------------------------------------------------- reading and converting
def test_tinyml_rejects_what_is_not_a_flatbuffer():
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        tinyml.arena_size(b"\x00" * 3)


def test_int8_conversion_gives_int8_io_and_weights(int8_model, float_model):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=int8_model)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    dtypes = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert dtypes == {np.int8, np.int32}  # int8 weights and activations, int32 biases
    assert len(int8_model) < len(float_model)


def test_int8_conversion_validates_its_arguments(cnn, mnist5k):
    with pytest.raises(ValueError, match=r"must have shape \(N,\) \+ \(28, 28, 1\)"):
        quantization.quantize_int8(cnn, mnist5k.x_train[:, :10])
    with pytest.raises(ValueError, match=r"num_samples must be an integer in \[1, 5\], got 6"):
        quantization.quantize_int8(cnn, mnist5k.x_train[:5], 6)
    with pytest.raises(ValueError, match="empty"):
        quantization.quantize_int8(cnn, mnist5k.x_train[:0])


# ---------------------------------------------------------------- C source
MAIN_CC = r"""
#include <cstdint>
#include <cstdio>
#include "tiny_model.h"
int main(int argc, char** argv) {
  if (argc != 2) return 2;
  if (reinterpret_cast<std::uintptr_t>(tiny_model) % 16 != 0) return 3;
  std::FILE* out = std::fopen(argv[1], "wb");
  if (!out || std::fwrite(tiny_model, 1, tiny_model_len, out) != tiny_model_len) return 4;
  std::fclose(out);
  std::printf("%u %d\n", tiny_model_len, TINY_MODEL_ARENA_BYTES);
  return 0;
}
"""


def test_c_files_compile_and_embed_exactly_the_model(tmp_path, int8_model):
    assert COMPILER, "a C++ compiler (g++) is needed to check the exported C files"
    header, source = tinyml.export_c(int8_model, tmp_path, name="tiny_model", arena_bytes=1234)
    assert (header.name, source.name) == ("tiny_model.h", "tiny_model.cc")
    assert "alignas(16) const unsigned char tiny_model[]" in source.read_text()
    (tmp_path / "main.cc").write_text(MAIN_CC)
    build = subprocess.run([COMPILER, "-std=c++17", "-Wall", "-Wextra", "-Werror", "main.cc",
                            "tiny_model.cc", "-o", "check"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "check"), str(tmp_path / "out.bin")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, f"exit {run.returncode} (3: array not 16-byte aligned)"
    assert run.stdout.split() == [str(len(int8_model)), "1234"]
    assert (tmp_path / "out.bin").read_bytes() == int8_model


def test_c_source_validates_name_and_alignment(int8_model):
    with pytest.raises(ValueError, match="name must be a C identifier.*got '2model'"):
        tinyml.c_source(int8_model, name="2model")
    with pytest.raises(ValueError, match=r"alignment must be a power of two in \[4, 4096\], "
                                         r"got 12"):
        tinyml.c_source(int8_model, alignment=12)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        tinyml.c_source(b"#include <stdio.h>")


# ---------------------------------------------------------------- operators
def test_model_ops_match_litert(int8_model, gelu_model):
    from ai_edge_litert.interpreter import Interpreter

    for flatbuffer in (int8_model, gelu_model):
        reference = [op["op_name"] for op in
                     Interpreter(model_content=flatbuffer)._get_ops_details()]
        assert [op.name for op in tinyml.model_ops(flatbuffer)] == reference


def test_kernel_probe_agrees_with_tflm_loading_real_models(int8_model, gelu_model):
    assert tinyml.tflm_has_kernel("CONV_2D") and tinyml.tflm_has_kernel("FULLY_CONNECTED")
    assert not tinyml.tflm_has_kernel("GELU")
    assert not tinyml.tflm_has_kernel(tinyml.Operator("FlexErf", custom=True))
    kernels = tinyml.tflm_kernels()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN", "SOFTMAX"} <= set(kernels)
    assert 60 < len(kernels) < 200 and "GELU" not in kernels
    with pytest.raises(ValueError, match="op must be a TFLite builtin operator name.*'conv'"):
        tinyml.tflm_has_kernel("conv")
    table = tinyml.check_ops(int8_model)
    assert list(table.index) == ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]
    assert table["count"].tolist() == [2, 2, 1, 1] and table["tflm"].all()
    assert tinyml.unsupported_ops(int8_model) == []


def test_float_model_with_an_op_tflm_lacks_is_named(tmp_path, gelu_model, mnist5k):
    assert tinyml.unsupported_ops(gelu_model) == ["GELU"]
    path = tmp_path / "gelu.tflite"  # the probe agrees with TFLM loading the whole model
    path.write_bytes(gelu_model)
    run = subprocess.run([sys.executable, "-c", PROBE, str(path), "100000"],
                         capture_output=True, text=True, timeout=120)
    assert run.stdout.startswith("fail")
    assert "Didn't find op for builtin opcode 'GELU'" in run.stderr
    assert not tinyml.check_ops(gelu_model).loc["GELU", "tflm"]
    with pytest.raises(ValueError, match="TensorFlow Lite Micro has no kernel for GELU"):
        tinyml.arena_size(gelu_model)
    with pytest.raises(ValueError, match="no kernel for GELU"):
        tinyml.predict_tflm(gelu_model, mnist5k.x_test[:2], arena_bytes=100_000)
    with pytest.raises(ValueError, match="no kernel for GELU"):
        tinyml.evaluate_micro(gelu_model, mnist5k)


# ---------------------------------------------------------------- arena and runs
def test_arena_size_is_the_minimum(tmp_path, int8_model, float_model):
    arena = tinyml.arena_size(int8_model)
    path = tmp_path / "m.tflite"
    path.write_bytes(int8_model)
    assert _allocates(path, arena) and not _allocates(path, arena - 1)
    assert tinyml.tflm_interpreter(int8_model, arena) is not None
    with pytest.raises(ValueError, match=f"arena_bytes={arena - 1} is too small for this model: "
                                         f"TFLM needs at least {arena} bytes"):
        tinyml.tflm_interpreter(int8_model, arena - 1)
    # int8 activations take a quarter of the float ones: conv1 alone is 24*24*4 values
    float_arena = tinyml.arena_size(float_model)
    assert float_arena > 2 * arena
    parts = tinyml.arena_breakdown(int8_model)
    assert parts["total"] == parts["activations"] + parts["persistent"] <= arena
    assert parts["activations"] >= 24 * 24 * 4 + 28 * 28  # conv1 output + input, in int8


def test_arena_of_a_single_dense_layer_is_found_without_crashing(tmp_path):
    # just below this model's minimum, TFLM's Python runtime segfaults on some arena sizes
    # instead of raising; the bisection runs in a child process and survives that
    dense = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(2)])
    flatbuffer = quantization.quantize_int8(dense, np.random.default_rng(0).random((8, 4)), 8)
    arena = tinyml.arena_size(flatbuffer)
    assert tinyml.ARENA_FLOOR < arena < 4096
    path = tmp_path / "dense.tflite"
    path.write_bytes(flatbuffer)
    assert _allocates(path, arena) and not _allocates(path, arena - 1)
    assert tinyml.predict_tflm(flatbuffer, np.ones((2, 4)), arena).shape == (2, 2)


def test_tflm_agrees_with_litert(int8_model, float_model, mnist5k):
    x = mnist5k.x_test[:60]
    quantized = tinyml.compare_runtimes(int8_model, x)
    # measured (tools/test_margins.py, EDGE_AI_SEED 0-3): 60 of 60 the same each time; the
    # threshold lets one close call flip
    assert quantized["same_prediction"] >= 0.98
    assert quantized["max_diff_steps"] <= 1.0  # at most one int8 rounding step
    floats = tinyml.compare_runtimes(float_model, x)
    assert floats["max_abs_diff"] < 1e-4 and floats["same_prediction"] == 1.0
    raw = tinyml.predict_tflm(int8_model, x[:3], raw=True)
    assert raw.dtype == np.int8 and raw.shape == (3, 10)
    with pytest.raises(ValueError, match=r"x must have shape \(N,\) \+ \(28, 28, 1\)"):
        tinyml.predict_tflm(int8_model, x[:, :5])


def test_evaluate_micro_measures_tflm_accuracy(int8_model, mnist5k):
    report = tinyml.evaluate_micro(int8_model, mnist5k, "tiny", limit=50)
    assert report.flash_bytes == len(int8_model)
    assert report.arena_bytes == tinyml.arena_size(int8_model)
    expected = np.mean(measure.predict_tflite(int8_model, mnist5k.x_test[:50]).argmax(-1)
                       == mnist5k.y_test[:50])
    # one-step rounding may flip a close call: one image of 50 is 0.02; measured
    # (tools/test_margins.py, EDGE_AI_SEED 0-3): 0.0 each time
    assert abs(report.accuracy - expected) <= 0.02
    assert report.flash_kb == pytest.approx(len(int8_model) / 1024)


# ---------------------------------------------------------------- boards
def test_fit_table_margins_and_reasons():
    table = tinyml.fit_table(20 * 1024, 8 * 1024, flash_allowance_kb=64, sram_allowance_kb=16)
    uno, iot = table.loc["Arduino Uno Rev3"], table.loc["Arduino Nano 33 IoT"]
    assert not uno.fits and "32-bit" in uno["why not"]
    assert "flash short by 52.0 KB" in uno["why not"]
    assert iot.fits and iot["flash margin KB"] == 256 - 84 and iot["SRAM margin KB"] == 32 - 24
    assert table["fits"].sum() == len(table) - 1
    huge = tinyml.fit_table(10 * 1024 * 1024, 600 * 1024)
    assert not huge["fits"].any()
    custom = pd.DataFrame({"board": ["x"], "core": ["Cortex-M4"], "flash_kb": [100],
                           "sram_kb": [10]})
    assert tinyml.fit_table(36 * 1024, 2 * 1024, custom, 64, 8).loc["x", "fits"]
    assert not tinyml.fit_table(36 * 1024 + 1, 2 * 1024, custom, 64, 8).loc["x", "fits"]


def test_fit_table_validates():
    with pytest.raises(ValueError, match="flash_bytes must be an integer >= 0, got -1"):
        tinyml.fit_table(-1, 10)
    with pytest.raises(ValueError, match="sram_allowance_kb must be >= 0, got -2"):
        tinyml.fit_table(1, 10, sram_allowance_kb=-2)
    with pytest.raises(ValueError, match="missing"):
        tinyml.fit_table(1, 10, pd.DataFrame({"board": ["x"]}))


# ---------------------------------------------------------------- command line
def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "helpers.course.tinyml", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_writes_c_files_and_prints_the_fit(tmp_path, int8_model):
    model = tmp_path / "tiny.tflite"
    model.write_bytes(int8_model)
    run = _cli(model, "--out", tmp_path / "c", "--board", "nano 33 iot")
    assert run.returncode == 0, run.stderr
    arena = tinyml.arena_size(int8_model)
    assert f"flash:  {len(int8_model):,} bytes" in run.stdout
    assert f"arena:  {arena:,} bytes" in run.stdout
    assert re.search(r"Arduino Nano 33 IoT .* True", run.stdout)
    assert "Raspberry Pi Pico" not in run.stdout  # --board shows one row
    header = (tmp_path / "c" / "model_data.h").read_text()
    assert f"#define MODEL_DATA_ARENA_BYTES {arena}" in header
    assert (tmp_path / "c" / "model_data.cc").exists()


def test_cli_exit_codes_and_messages(tmp_path, int8_model, gelu_model, capsys):
    model = tmp_path / "tiny.tflite"
    model.write_bytes(int8_model)
    assert tinyml_cli.main([str(model), "--out", str(tmp_path / "c"), "--board", "uno"]) == 1
    assert "TFLM needs a 32-bit CPU" in capsys.readouterr().out
    assert tinyml_cli.main([str(model), "--out", str(tmp_path / "c"), "--board", "nano"]) == 2
    assert "board must name one of" in capsys.readouterr().err
    bad = tmp_path / "bad.tflite"
    bad.write_text("hello")
    assert tinyml_cli.main([str(bad)]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    gelu = tmp_path / "gelu.tflite"
    gelu.write_bytes(gelu_model)
    assert tinyml_cli.main([str(gelu), "--out", str(tmp_path / "g")]) == 1
    assert "no kernel for GELU" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    run = _cli(bad)  # the real command line: a clear message, no traceback
    assert run.returncode == 2 and "not a TFLite flatbuffer" in run.stderr
    assert "Traceback" not in run.stderr


# ---------------------------------------------------------------- lab 4
def test_lab4_solution_scores_full_marks_and_the_lab_scores_zero():
    from helpers.course import grading

    solutions, lab = REPO / "solutions", REPO / "labs" / "lab4_tinyml.ipynb"
    problems = grading.check_labs(solutions, REPO / "labs")
    assert not [problem for problem in problems if "lab4_tinyml" in problem], problems
    solved = grading.grade(solutions / "lab4_tinyml.ipynb", solutions, timeout=600)
    assert solved.error == "" and solved.max_score >= 10
    assert solved.score == solved.max_score, grading.format_result(solved)
    assert [cell.grade_id for cell in solved.needs_manual] == ["why_it_fits"]
    untouched = grading.grade(lab, solutions, timeout=600)
    assert untouched.error == "" and untouched.score == 0, grading.format_result(untouched)
    assert untouched.max_score == solved.max_score

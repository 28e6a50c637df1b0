"""Grading integrity: a submission earns nothing for the reference's code or an uncompressed model.

First the check itself (``helpers.course.integrity``) on functions compiled as notebook cells
are (module ``__main__``), pure Python and fast. Then each of the four graded labs is graded
with a submission written the way a student might game it: importing the shipped reference,
wrapping it, hiding it in a default argument, handing in the unpruned model or a
dynamic-range model. To stay fast, each lab is cut down to its setup cell and the tasks under
test (the instructor's real test cells, hidden tests included), and the four are graded in
parallel.
"""
from __future__ import annotations

import functools
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest

from helpers.course import grading, integrity

REPO = Path(__file__).resolve().parent.parent
PRUNING = ["helpers.pruning"]


def _cell_function(source: str, name: str):
    """Compile ``source`` the way a notebook cell is (globals named ``__main__``)."""
    namespace = {"__name__": "__main__", "np": np}
    exec(compile(source, "/tmp/ipykernel_0/cell.py", "exec"), namespace)  # noqa: S102
    return namespace[name], namespace


OWN = """
def magnitude_mask(weights, sparsity):
    magnitude = np.abs(weights)
    return magnitude >= np.sort(magnitude.ravel())[-1]
"""


def test_own_code_passes():
    function, _ = _cell_function(OWN, "magnitude_mask")
    assert integrity.violations(function, PRUNING) == []
    integrity.require_own_code(function, PRUNING)


@pytest.mark.parametrize("source, reason", [
    ("from helpers.pruning import magnitude_mask",
     "magnitude_mask is helpers.pruning.magnitude_mask, not a function defined in the notebook"),
    ("from helpers import pruning as ref\n"
     "def magnitude_mask(w, s):\n    return ref.magnitude_mask(w, s)",
     "magnitude_mask uses helpers.pruning.magnitude_mask"),
    ("import helpers\ndef magnitude_mask(w, s):\n    return helpers.pruning.magnitude_mask(w, s)",
     "magnitude_mask uses helpers.pruning.magnitude_mask"),
    ("def magnitude_mask(w, s):\n    from helpers.pruning import magnitude_mask as m\n"
     "    return m(w, s)", "magnitude_mask uses helpers.pruning"),
    ("from helpers.pruning import magnitude_mask as m\n"
     "def magnitude_mask(w, s, impl=m):\n    return impl(w, s)",
     "magnitude_mask uses helpers.pruning.magnitude_mask"),
    ("from helpers.pruning import magnitude_mask as m\ndef _helper(w, s):\n    return m(w, s)\n"
     "def magnitude_mask(w, s):\n    return (lambda: [_helper(w, s) for _ in [0]][0])()",
     "magnitude_mask uses helpers.pruning.magnitude_mask"),
    ("from helpers.pruning import magnitude_mask as m\nclass Masker:\n"
     "    def __call__(self, w, s):\n        return m(w, s)\n"
     "def magnitude_mask(w, s):\n    return Masker()(w, s)", "uses helpers.pruning.magnitude_mask"),
    ("def magnitude_mask(w, s):\n"
     "    return __import__('helpers.pruning').pruning.magnitude_mask(w, s)",
     "imports or evaluates code by name (builtins.__import__)"),
    ("import importlib\ndef magnitude_mask(w, s):\n"
     "    return importlib.import_module('helpers.' + 'pruning').magnitude_mask(w, s)",
     "names 'helpers.pruning'"),
    ("import types, helpers.pruning\nmagnitude_mask = types.FunctionType("
     "helpers.pruning.magnitude_mask.__code__, globals(), 'magnitude_mask')",
     "runs code compiled from"),
    ("import functools, helpers.pruning\n"
     "magnitude_mask = functools.partial(helpers.pruning.magnitude_mask)",
     "must be a function defined in the notebook, got partial"),
])
def test_reference_code_is_caught_however_it_is_reached(source, reason):
    function, _ = _cell_function(source, "magnitude_mask")
    problems = integrity.violations(function, PRUNING)
    assert any(reason in problem for problem in problems), problems
    with pytest.raises(AssertionError, match="graded code must be your own"):
        integrity.require_own_code(function, PRUNING)


def test_allowed_helpers_and_forbidden_single_objects():
    source = "from helpers import measure\ndef score(m):\n    return measure.sparsity(m)"
    function, _ = _cell_function(source, "score")
    assert integrity.violations(function, PRUNING) == []
    assert integrity.violations(function, ["helpers.measure.sparsity"]) == [
        "score uses helpers.measure.sparsity (a reference implementation)"]
    with pytest.raises(ValueError, match="forbidden must name modules or objects"):
        integrity.violations(function, ["helpers.no_such_module"])


def test_disqualify_replaces_the_function_so_later_tests_fail():
    _, namespace = _cell_function("from helpers.pruning import magnitude_mask", "magnitude_mask")
    with pytest.raises(AssertionError, match="not a function defined in the notebook"):
        integrity.disqualify_unless_own(namespace, "magnitude_mask", PRUNING)
    with pytest.raises(AssertionError, match="graded code must be your own"):
        namespace["magnitude_mask"](np.ones(3), 0.5)
    own, namespace = _cell_function(OWN, "magnitude_mask")
    integrity.disqualify_unless_own(namespace, "magnitude_mask", PRUNING)
    assert namespace["magnitude_mask"] is own


def test_the_check_is_not_fooled_by_names():
    """A function named like the task but compiled elsewhere, or a renamed reference."""
    assert integrity.violations(functools.reduce, PRUNING) == [
        "reduce must be a function defined in the notebook, got _functools.reduce"]
    elsewhere = types.FunctionType((lambda w, s: w).__code__, {"__name__": "students.lib"},
                                   "magnitude_mask")
    assert integrity.violations(elsewhere, PRUNING)[0].endswith(
        "not a function defined in the notebook")


# ---------------------------------------------------------------- the four labs

# lab -> (cells kept besides the setup, {answer cell (or "after <cell>" for a new cell):
# adversarial source}, tests that must fail because of the integrity check, {other test
# that must fail: part of its reason})
ADVERSARIAL = {
    "lab1_pruning": (
        ["magnitude_mask", "test_magnitude_mask", "global_prune", "test_global_prune",
         "fine_tune", "show_tuned", "test_sparsity", "test_accuracy"],
        {"magnitude_mask": "from helpers.pruning import magnitude_mask",
         "global_prune": "from helpers import pruning as p\n\ndef global_prune(model, sparsity):\n"
                         "    return p.prune_low_magnitude(model, sparsity, 'global')",
         "fine_tune": "sk = tfmot.sparsity.keras\ntuned = model  # the unpruned model"},
        ["test_magnitude_mask", "test_global_prune"],
        {"test_sparsity": "need >= 80% sparsity",
         "test_accuracy": "accuracy counts only at >= 80% sparsity"}),
    "lab2_quantization": (
        ["scale_zero_point", "test_scale_zero_point_visible", "test_scale_zero_point_hidden",
         "quantize_dequantize", "test_quantize_visible", "test_quantize_hidden",
         "int8_conversion", "int8_report", "test_int8_visible", "test_int8_hidden"],
        {"scale_zero_point": "from helpers.quantization import scale_zero_point",
         "quantize_dequantize":
             "from helpers import quantization\n\n"
             "def quantize(x, scale, zero_point, bits=8, _impl=quantization.quantize):\n"
             "    return _impl(x, scale, zero_point, bits)\n\n"
             "def dequantize(q, scale, zero_point):\n"
             "    return scale * (np.asarray(q, dtype=np.float64) - zero_point)",
         "int8_conversion":  # dynamic range: int8 weights, float32 activations and I/O
             "def representative_images():\n    for image in ds.x_train[:200]:\n"
             "        yield [image[None].astype(np.float32)]\n\n"
             "converter = tf.lite.TFLiteConverter.from_keras_model(model)\n"
             "converter.optimizations = [tf.lite.Optimize.DEFAULT]\n"
             "int8_model = converter.convert()"},
        ["test_scale_zero_point_visible", "test_scale_zero_point_hidden",
         "test_quantize_visible", "test_quantize_hidden"],
        {"test_int8_visible": "the input must be int8", "test_int8_hidden": "not full int8"}),
    "lab3_distillation": (
        ["softmax_t", "integrity_softmax_t", "test_softmax_t_visible", "test_softmax_t",
         "kd_loss", "integrity_kd_loss", "test_kd_loss_visible", "test_kd_loss"],
        {"softmax_t": "softmax_t = distillation.softmax_with_temperature",
         # an own kd_loss passes its check; the reference bound after the check is caught
         "after integrity_kd_loss": "kd_loss = distillation.distillation_loss"},
        ["integrity_softmax_t", "test_softmax_t_visible", "test_softmax_t",
         "test_kd_loss_visible", "test_kd_loss"], {}),
    "lab4_tinyml": (
        ["baseline", "footprint_impl", "test_footprint", "prune_impl", "prune_run",
         "test_prune", "shrink_impl", "test_shrink"],
        {"footprint_impl":
             "def footprint(flatbuffer):\n"
             "    micro = tinyml.evaluate_micro(flatbuffer, ds, limit=1)\n"
             "    fits = (micro.flash_kb <= BUDGET['flash_kb']\n"
             "            and micro.arena_kb <= BUDGET['arena_kb'])\n"
             "    return {'flash_kb': micro.flash_kb, 'arena_kb': micro.arena_kb, 'fits': fits}",
         "prune_impl": "from helpers import pruning\n\ndef magnitude_prune(model, sparsity):\n"
                       "    return pruning.prune_low_magnitude(model, sparsity, 'layer')",
         "shrink_impl": "from helpers import pruning\n\ndef shrink_dense(model, units):\n"
                        "    return pruning.prune_filters(model, {name: 1 - n / "
                        "model.get_layer(name).units for name, n in units.items()})"},
        ["test_footprint", "test_prune"], {"test_shrink": ""}),
}


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory):
    """lab -> GradeResult of its adversarial submission against the cut-down lab."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "solutions").mkdir()
    paths = []
    for lab, (kept, answers, _, _) in ADVERSARIAL.items():
        source = nbformat.read(REPO / "solutions" / f"{lab}.ipynb", as_version=4)
        source.cells = [cell for cell in source.cells if _grade_id(cell) in ("setup", *kept)]
        assert [_grade_id(cell) for cell in source.cells] == ["setup", *kept], lab
        nbformat.write(source, root / "solutions" / f"{lab}.ipynb")
        for cell in list(source.cells):
            if _grade_id(cell) in answers:
                cell.source = answers[_grade_id(cell)]
            if f"after {_grade_id(cell)}" in answers:  # a student cell after this one
                source.cells.insert(source.cells.index(cell) + 1, nbformat.v4.new_code_cell(
                    answers[f"after {_grade_id(cell)}"]))
        paths.append(root / "student" / f"{lab}.ipynb")
        paths[-1].parent.mkdir(exist_ok=True)
        nbformat.write(source, paths[-1])
    results = grading.grade_many(paths, root / "solutions", jobs=2, timeout=900)
    return {result.lab: result for result in results}


@pytest.mark.parametrize("lab", list(ADVERSARIAL))
def test_gaming_the_lab_earns_nothing(adversarial, lab):
    result = adversarial[lab]
    _, _, integrity_tests, other_tests = ADVERSARIAL[lab]
    rows = {row.grade_id: row for row in result.cells}
    assert result.error == "" and result.score == 0, grading.format_result(result)
    for grade_id in integrity_tests:
        row = rows[grade_id]
        assert row.status == "failed" and "graded code must be your own" in row.reason, (
            grade_id, row.reason)
    for grade_id, reason in other_tests.items():
        row = rows[grade_id]
        assert row.status == "failed" and reason in row.reason, (grade_id, row.reason)

"""helpers.lottery: surviving-weight masks, rewinding, random re-init, masked training, the
experiment's table and explorer, and lab 6 (the solution scores full marks, the blank lab 0)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import lottery, measure

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small(digits):
    """An untrained 64-16-10 MLP on the 8x8 digits, and its initial weights."""
    model = lottery.lottery_mlp(digits.input_shape, digits.num_classes, hidden=16, seed=0)
    return model, [w.copy() for w in model.get_weights()]


def _ones(model):
    return {n: np.ones(model.get_layer(n).get_weights()[0].shape, bool)
            for n in ("hidden", "logits")}


def test_round_sparsities_compound():
    assert lottery.round_sparsities(3, 0.5) == [0.5, 0.75, 0.875]
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\), got 1.5"):
        lottery.round_sparsities(2, 1.5)


def test_prune_surviving_removes_the_smallest_survivors_only(small):
    model, _ = small
    first = lottery.prune_surviving(model, _ones(model), 0.5)
    second = lottery.prune_surviving(model, first, 0.5)
    for name, mask in second.items():
        kernel = np.abs(model.get_layer(name).get_weights()[0])
        assert not (mask & ~first[name]).any(), "a pruned weight never comes back"
        assert abs(mask.mean() - 0.25) < 0.01, mask.mean()
        assert kernel[mask].min() >= kernel[first[name] & ~mask].max()
    with pytest.raises(ValueError, match="mask for 'hidden' must have shape"):
        lottery.prune_surviving(model, {"hidden": np.ones((3, 3), bool)}, 0.5)


def test_rewind_puts_the_mask_on_the_initial_weights(small, digits):
    model, initial = small
    masks = lottery.prune_surviving(model, _ones(model), 0.8)
    ticket = lottery.rewind(model, initial, masks)
    np.testing.assert_array_equal(ticket.get_layer("hidden").get_weights()[0],
                                  initial[0] * masks["hidden"])
    np.testing.assert_array_equal(ticket.get_layer("hidden").get_weights()[1], initial[1])
    assert ticket is not model and ticket.optimizer is not None
    with pytest.raises(ValueError, match="initial_weights must be"):
        lottery.rewind(model, initial[:2], masks)


def test_random_reinit_keeps_the_mask_with_new_values_of_the_same_scale(small):
    model, initial = small
    masks = lottery.prune_surviving(model, _ones(model), 0.5)
    control = lottery.random_reinit(model, masks, seed=7)
    kernel = control.get_layer("hidden").get_weights()[0]
    assert not kernel[~masks["hidden"]].any()
    assert not np.allclose(kernel[masks["hidden"]], initial[0][masks["hidden"]])
    # fresh Glorot-uniform values under the mask have the spread of a whole initial kernel
    # (measured ratio 1.04 / 1.05 with EDGE_AI_SEED 0 / 1), not that of its largest 50 %
    ratio = kernel[masks["hidden"]].std() / initial[0].std()
    assert 0.9 < ratio < 1.2, ratio


def test_masked_training_keeps_pruned_weights_at_zero_and_learns(small, digits):
    model, initial = small
    masks = lottery.prune_surviving(model, _ones(model), 0.7)
    ticket = lottery.train_masked(lottery.rewind(model, initial, masks), digits, masks, 10)
    for name, mask in masks.items():
        assert not ticket.get_layer(name).get_weights()[0][~mask].any(), name
    # 10 epochs at 70 % sparsity: measured 0.54 / 0.51 on digits (EDGE_AI_SEED 0 / 1);
    # chance is 0.10
    assert measure.accuracy(ticket, digits.x_test, digits.y_test) > 0.3


def test_the_experiment_table_and_its_summary(digits):
    results = lottery.lottery_experiment(digits, seeds=(0, 1), rounds=2, rate=0.5, epochs=2,
                                         hidden=16, cache=False)
    assert list(results.columns) == ["seed", "round", "sparsity", "ticket", "reinit"]
    assert len(results) == 6 and results["round"].tolist() == [0, 1, 2] * 2
    # layer-wise 50 % per round, the 160 output weights at 25 %: 1 - (512 + 120)/1184 = 0.466
    assert abs(results.query("round == 1")["sparsity"].iloc[0] - 0.4662) < 0.002
    summary = lottery.summarize(results)
    assert list(summary.index) == [0, 1, 2] and summary["ticket std"].ge(0).all()
    with pytest.raises(ValueError, match="must be a DataFrame"):
        lottery.summarize({"round": [0]})


def test_iterative_and_one_shot_reach_the_same_sparsity(digits):
    table = lottery.iterative_vs_one_shot(digits, 0.8, cycles=2, epochs_per_cycle=1,
                                          seeds=(0,), dense_epochs=2, hidden=16, cache=False)
    row = table.iloc[0]
    assert abs(row["sparsity_iterative"] - row["sparsity_one_shot"]) < 0.01
    assert 0.7 < row["sparsity_iterative"] < 0.8  # the output layer is pruned at half rate
    with pytest.raises(ValueError, match=r"final_sparsity must be in \[0, 1\)"):
        lottery.iterative_vs_one_shot(digits, 1.0)


def test_ticket_explorer_answers_the_slider_headlessly():
    summary = pd.DataFrame({"sparsity %": [0.0, 50.0, 90.0], "ticket mean %": [92, 92, 90],
                            "ticket std": [0.1, 0.2, 0.3], "reinit mean %": [92, 91, 87],
                            "reinit std": [0.1, 0.2, 0.4]}, index=[0, 1, 2])
    explorer = lottery.ticket_explorer(summary, 0.9)
    explorer.slider.value = 90.0
    assert "gap +3.0 points" in explorer.labels.value
    explorer.slider.value = 0.0
    assert "gap +0.0 points" in explorer.labels.value


# ---------------------------------------------------------------- lab 6
def test_lab6_solution_scores_full_marks_and_the_lab_scores_zero():
    from helpers.course import grading

    solutions, lab = REPO / "solutions", REPO / "labs" / "lab6_lottery_ticket.ipynb"
    problems = grading.check_labs(solutions, REPO / "labs")
    assert not [problem for problem in problems if "lab6_lottery" in problem], problems
    solved = grading.grade(solutions / "lab6_lottery_ticket.ipynb", solutions, timeout=600)
    assert solved.error == "" and solved.max_score == 10
    assert solved.score == solved.max_score, grading.format_result(solved)
    assert [cell.grade_id for cell in solved.needs_manual] == ["reflection"]
    untouched = grading.grade(lab, solutions, timeout=600)
    assert untouched.error == "" and untouched.score == 0, grading.format_result(untouched)
    assert untouched.max_score == solved.max_score


def test_lab6_gives_nothing_for_the_reference_code(tmp_path):
    """A submission that calls helpers.lottery for Tasks 1-2 fails both (integrity check)."""
    import nbformat

    from helpers.course import grading

    notebook = nbformat.read(REPO / "solutions" / "lab6_lottery_ticket.ipynb", as_version=4)
    keep = ("setup", "layer_mask", "test_layer_mask", "rewind_to_init", "test_rewind")
    notebook.cells = [c for c in notebook.cells
                      if c.metadata.get("nbgrader", {}).get("grade_id") in keep]
    (tmp_path / "solutions").mkdir()
    nbformat.write(notebook, tmp_path / "solutions" / "lab6_lottery_ticket.ipynb")
    answers = {"layer_mask": "def layer_mask(kernel, mask, rate):\n"
                             "    probe = keras.Sequential([keras.layers.InputLayer("
                             "input_shape=kernel.shape[:1]), keras.layers.Dense("
                             "kernel.shape[1], name='d')])\n"
                             "    probe.get_layer('d').set_weights([kernel, "
                             "np.zeros(kernel.shape[1])])\n"
                             "    return lottery.prune_surviving(probe, {'d': mask}, rate)['d']",
               "rewind_to_init": "rewind_to_init = lottery.rewind"}
    for cell in notebook.cells:
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        cell.source = answers.get(grade_id, cell.source)
    nbformat.write(notebook, tmp_path / "lab6_lottery_ticket.ipynb")
    result = grading.grade(tmp_path / "lab6_lottery_ticket.ipynb", tmp_path / "solutions",
                           timeout=600)
    rows = {row.grade_id: row for row in result.cells}
    assert result.score == 0, grading.format_result(result)
    for grade_id in ("test_layer_mask", "test_rewind"):
        assert rows[grade_id].status == "failed"
        assert "graded code must be your own" in rows[grade_id].reason, rows[grade_id].reason


def test_the_notebooks_inline_rewind_is_the_helpers(digits, capsys):
    """The lesson's four lines (mask from the trained kernel, rewind onto the initial one)."""
    import nbformat

    path = REPO / "lessons" / "deeper" / "structured_pruning_and_lottery_ticket.ipynb"
    source = next(c.source for c in nbformat.read(path, as_version=4).cells
                  if c.get("id") == "rewind-by-hand")
    namespace = {"np": np, "lottery": lottery, "ds": digits}
    exec(compile(source, "rewind-by-hand", "exec"), namespace)  # noqa: S102
    assert "ticket == helper: True" in capsys.readouterr().out
    assert abs(namespace["mask"].mean() - 0.2) < 0.01

"""helpers.pruning: from-scratch masks checked against TFMOT, structured pruning, sweeps."""
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from helpers import cache, measure, models, pruning

sk = tfmot.sparsity.keras
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mlp(digits):
    """A small trained MLP on 8x8 digits (1,810 parameters): fast to fine-tune."""
    model = models.compile_model(models.build("mlp", digits.input_shape), 1e-2)
    models.train(model, digits, epochs=5, progress=False)
    return model


def _tfmot_masks(model, sparsity):
    """What TFMOT keeps: wrap with ConstantSparsity, take one step at learning rate 0, strip."""
    copy = pruning.copy_model(model)
    wrapped = sk.prune_low_magnitude(copy, pruning_schedule=sk.ConstantSparsity(sparsity, 0,
                                                                                frequency=1))
    wrapped.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.zeros((1,) + model.input_shape[1:], np.float32)
    wrapped.fit(x, np.zeros((1,) + model.output_shape[1:], np.float32), epochs=1, verbose=0,
                callbacks=[sk.UpdatePruningStep()])
    stripped = sk.strip_pruning(wrapped)
    return {name: stripped.get_layer(name).kernel.numpy() != 0
            for name in pruning.prunable_layers(model)}


# ---------------------------------------------------------------------------- from scratch
def test_magnitude_mask_keeps_the_largest_weights():
    w = np.array([[0.9, -0.05, 0.3], [-0.7, 0.01, -0.2]])
    mask = pruning.magnitude_mask(w, 0.5)
    assert mask.dtype == bool and mask.shape == w.shape
    assert mask.tolist() == [[True, False, True], [True, False, False]]
    assert pruning.magnitude_mask(w, 0.0).all()
    assert pruning.magnitude_mask(w, 0.99).sum() == 1  # at least one weight survives
    tied = np.array([1.0, 2.0, 2.0, 3.0])
    assert pruning.magnitude_mask(tied, 0.5).tolist() == [False, True, True, True]  # ties kept
    weights = np.random.default_rng(0).normal(size=(400, 120))
    for s in (0.1, 0.5, 0.9, 0.95):
        mask = pruning.magnitude_mask(weights, s)
        assert mask.sum() == round(weights.size * (1 - s))
        assert np.abs(weights[mask]).min() > np.abs(weights[~mask]).max()


@pytest.mark.parametrize("sparsity", [0.3, 0.8, 0.93])
def test_per_layer_masks_equal_tfmot(lenet, sparsity):
    """Check against the trusted library: same kept set as TFMOT's ConstantSparsity."""
    ours = pruning.magnitude_masks(lenet, sparsity, scope="layer")
    theirs = _tfmot_masks(lenet, sparsity)
    assert set(ours) == set(theirs) == {"conv1", "conv2", "fc1", "fc2", "logits"}
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_global_threshold_spares_small_layers(lenet):
    masks = pruning.magnitude_masks(lenet, 0.9, scope="global")
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(61_470 * 0.1)
    kernels = {name: lenet.get_layer(name).kernel.numpy() for name in masks}
    smallest_kept = min(np.abs(kernels[n][masks[n]]).min() for n in masks)
    largest_removed = max(np.abs(kernels[n][~masks[n]]).max() for n in masks)
    assert smallest_kept > largest_removed  # one threshold for all layers
    per_layer = pruning.layer_sparsities(masks)
    assert per_layer["conv1"] < 0.75 < 0.9 < per_layer["fc1"]
    uniform = pruning.layer_sparsities(pruning.magnitude_masks(lenet, 0.9, scope="layer"))
    assert all(abs(s - 0.9) < 0.01 for s in uniform.values())


def test_prune_low_magnitude_returns_a_pruned_copy(lenet, mnist5k):
    digest = cache.model_digest(lenet)
    pruned = pruning.prune_low_magnitude(lenet, 0.5)
    assert cache.model_digest(lenet) == digest and measure.sparsity(lenet) == 0.0
    assert cache.model_digest(pruning.copy_model(lenet)) == digest  # a cache key: stable
    assert cache.model_digest(pruned) != digest
    assert measure.sparsity(pruned) == pytest.approx(0.5, abs=1e-4)
    accuracy = measure.accuracy(pruned, mnist5k.x_test, mnist5k.y_test)
    assert accuracy > 0.95  # half of LeNet-5's weights are not needed, even without training
    only_fc1 = pruning.prune_low_magnitude(lenet, {"fc1": 0.8})
    report = pruning.sparsity_report(only_fc1)
    assert report.loc["fc1", "sparsity %"] == 80.0 and report.loc["conv1", "sparsity %"] == 0.0
    assert report.loc["total", "weights"] == 61_470
    assert report.loc["total", "nonzero"] == 61_470 - 38_400


def test_bad_arguments_give_clear_errors(lenet, mnist5k):
    w = np.ones((3, 3))
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.5"):
        pruning.magnitude_mask(w, 1.5)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"got {bad}"):
            pruning.magnitude_mask(w, bad)
    with pytest.raises(ValueError, match="must be a number"):
        pruning.magnitude_mask(w, "half")
    with pytest.raises(ValueError, match="empty"):
        pruning.magnitude_mask(np.array([]), 0.5)
    with pytest.raises(ValueError, match="unknown layer 'fc9'.*'conv1', 'conv2'"):
        pruning.magnitude_masks(lenet, 0.5, layers=["fc9"])
    with pytest.raises(ValueError, match=r"sparsity\['fc1'\] must be in \[0, 1\), got 2"):
        pruning.prune_low_magnitude(lenet, {"fc1": 2})
    with pytest.raises(ValueError, match="scope must be one of 'layer', 'global', got 'all'"):
        pruning.magnitude_masks(lenet, 0.5, scope="all")
    with pytest.raises(ValueError, match="kind must be one of"):
        pruning.pruning_schedule("cubic", 0.5, 100)
    with pytest.raises(ValueError, match="end_step must be an integer >= 1, got 0"):
        pruning.pruning_schedule("polynomial", 0.5, 0)
    with pytest.raises(ValueError, match="mask for 'fc1' must have shape"):
        pruning.apply_masks(lenet, {"fc1": np.ones((3, 3), bool)})
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        pruning.fine_tune(lenet, mnist5k, epochs=0)
    with pytest.raises(ValueError, match="data must be a Dataset.*got str"):
        pruning.prune_and_fine_tune(lenet, "mnist5k", 0.9)
    with pytest.raises(ValueError, match="learning_rate must be in"):
        pruning.fine_tune(lenet, mnist5k, learning_rate=5.0)


# ---------------------------------------------------------------------------- TFMOT
def test_schedules_follow_their_definition():
    constant = pruning.pruning_schedule("constant", 0.8, 100)
    poly = pruning.pruning_schedule("polynomial", 0.8, 100)
    assert float(constant(0)[1]) == pytest.approx(0.8)
    assert float(poly(0)[1]) == pytest.approx(0.0)
    assert float(poly(50)[1]) == pytest.approx(0.8 * (1 - 0.5 ** 3))  # cubic ramp
    assert float(poly(100)[1]) == pytest.approx(0.8)
    # TFMOT only updates masks every `frequency` steps: the ramp must end on such a step
    assert pruning.pruning_schedule("polynomial", 0.8, 126, frequency=10).end_step == 120
    with pytest.raises(ValueError, match=r"end_step must be >= frequency \(10\), got 5"):
        pruning.pruning_schedule("polynomial", 0.8, 5)


def test_training_without_update_pruning_step_fails(digits, mlp):
    wrapped = pruning.prune_with_tfmot(mlp, 0.5)
    with pytest.raises(Exception, match="UpdatePruningStep"):
        wrapped.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0)


def test_prune_and_fine_tune_reaches_the_target(digits, mlp, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    digest = cache.model_digest(mlp)
    one_shot = measure.accuracy(pruning.prune_low_magnitude(mlp, 0.8), digits.x_test,
                                digits.y_test)
    tuned = pruning.prune_and_fine_tune(mlp, digits, 0.8, epochs=3, progress=False)
    assert cache.model_digest(mlp) == digest  # the input model is untouched
    assert not pruning.is_wrapped(tuned)
    assert measure.sparsity(tuned) == pytest.approx(0.8, abs=0.002)
    expected = pruning.layer_sparsities(pruning.magnitude_masks(mlp, 0.8, "global"))
    report = pruning.sparsity_report(tuned)
    for name, target in expected.items():  # TFMOT kept the global allocation per layer
        assert report.loc[name, "sparsity %"] == pytest.approx(100 * target, abs=0.1)
    accuracy = measure.accuracy(tuned, digits.x_test, digits.y_test)
    assert accuracy > one_shot and accuracy > 0.85
    assert len(list(tmp_path.glob("finetune-*.weights.h5"))) == 1
    again = pruning.prune_and_fine_tune(mlp, digits, 0.8, epochs=3, progress=False)
    for a, b in zip(tuned.get_weights(), again.get_weights()):  # loaded from the cache
        np.testing.assert_array_equal(a, b)


def test_lesson_recipe_keeps_accuracy_at_90_percent(lenet, mnist5k):
    """The lesson's recipe (cached if the lesson ran): fine-tuning recovers 90% sparsity.

    Against the converged baseline (60 epochs, cosine) seed 0 measured 98.7 % dense, 32.1 %
    one-shot at 90 % and 97.0 % after the 4-epoch fine-tune: a 1.7-point drop (the old
    constant-rate baseline made this look like "within 1 point"). Seeds 1 and 2 were not
    measured for this row, so the bound is 3 points (1.7 + ~3 test-set standard errors of
    0.4), and the fine-tune must recover at least 30 points over one-shot pruning.
    """
    tuned = pruning.prune_and_fine_tune(lenet, mnist5k, 0.9, progress=False)
    assert measure.sparsity(tuned) == pytest.approx(0.9, abs=0.001)
    baseline = measure.accuracy(lenet, mnist5k.x_test, mnist5k.y_test)
    accuracy = measure.accuracy(tuned, mnist5k.x_test, mnist5k.y_test)
    one_shot = measure.accuracy(pruning.prune_low_magnitude(lenet, 0.9), mnist5k.x_test,
                                mnist5k.y_test)
    assert accuracy >= baseline - 0.03 and accuracy >= one_shot + 0.3
    dense, sparse = measure.to_tflite(lenet), measure.to_tflite(tuned)
    assert abs(len(dense) - len(sparse)) < 0.01 * len(dense)  # zeros are stored densely
    assert measure.gzip_bytes(dense) / measure.gzip_bytes(sparse) > 3
    compact = pruning.to_sparse_tflite(tuned)
    assert len(compact) < len(dense) / 3 and "DENSIFY" in pruning.tflite_ops(compact)
    np.testing.assert_allclose(measure.predict(compact, mnist5k.x_test[:20]),
                               measure.predict(sparse, mnist5k.x_test[:20]), atol=1e-4)


# ---------------------------------------------------------------------------- structured
def test_prune_filters_with_nothing_removed_is_the_same_model(lenet, mnist5k):
    same = pruning.prune_filters(lenet, {"conv1": 0.0, "conv2": 0.0, "fc1": 0.0, "fc2": 0.0})
    assert measure.count_params(same) == measure.count_params(lenet) == 61_706
    x = mnist5k.x_test[:32]
    np.testing.assert_allclose(same.predict(x, verbose=0), lenet.predict(x, verbose=0),
                               atol=1e-6)


def test_prune_filters_gives_a_smaller_model_computing_the_same_function(lenet, mnist5k):
    fractions = {"conv1": 2 / 6, "conv2": 0.5, "fc1": 0.75, "fc2": 0.5}
    slim = pruning.prune_filters(lenet, fractions)
    shapes = {name: slim.get_layer(name).kernel.shape for name in pruning.prunable_layers(slim)}
    assert shapes == {"conv1": (5, 5, 1, 4), "conv2": (5, 5, 4, 8), "fc1": (200, 30),
                      "fc2": (30, 42), "logits": (42, 10)}
    assert measure.count_params(slim) == (104 + 808 + 6030 + 1302 + 430)
    assert len(measure.to_tflite(slim)) < len(measure.to_tflite(lenet)) / 4
    # the removed units are those with the smallest L1 norms ...
    norms = pruning.filter_norms(lenet, "fc1")
    kept = np.sort(np.argsort(-norms)[:30])
    np.testing.assert_allclose(slim.get_layer("fc1").bias.numpy(),
                               lenet.get_layer("fc1").bias.numpy()[kept])
    # ... and zeroing them in the original model gives exactly the slim model's outputs
    zeroed = pruning.copy_model(lenet)
    for name, fraction in fractions.items():
        norms = pruning.filter_norms(lenet, name)
        removed = np.argsort(-norms)[len(norms) - round(fraction * len(norms)):]
        kernel, bias = zeroed.get_layer(name).get_weights()
        kernel[..., removed], bias[removed] = 0.0, 0.0
        zeroed.get_layer(name).set_weights([kernel, bias])
    x = mnist5k.x_test[:64]
    np.testing.assert_allclose(slim.predict(x, verbose=0), zeroed.predict(x, verbose=0),
                               atol=1e-4)


def test_prune_filters_bad_arguments(lenet):
    with pytest.raises(ValueError, match="cannot prune the output layer 'logits'"):
        pruning.prune_filters(lenet, {"logits": 0.5})
    with pytest.raises(ValueError, match="unknown layer 'pool1'"):
        pruning.prune_filters(lenet, {"pool1": 0.5})
    with pytest.raises(ValueError, match=r"fractions\['fc1'\] must be in \[0, 1\), got 1.0"):
        pruning.prune_filters(lenet, {"fc1": 1.0})
    with pytest.raises(ValueError, match="fractions must be a dict"):
        pruning.prune_filters(lenet, 0.5)


# ---------------------------------------------------------------------------- sweeps
def test_sparsity_sweep_measures_and_caches(digits, mlp, tmp_path, monkeypatch):
    from helpers import widgets

    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    sweep = pruning.sparsity_sweep(mlp, digits, (0.0, 0.5, 0.9), epochs=2, progress=False)
    table = sweep.table
    assert list(table.index) == [0.0, 0.5, 0.9]
    assert table.loc[0.0, "accuracy one-shot"] == sweep.baseline_accuracy
    assert table.loc[0.9, "accuracy fine-tuned"] > table.loc[0.9, "accuracy one-shot"]
    assert table["sparsity measured"].tolist() == pytest.approx([0.0, 0.5, 0.9], abs=0.002)
    assert table["tflite bytes"].max() - table["tflite bytes"].min() < 100  # dense storage
    assert table["tflite gzip bytes"].is_monotonic_decreasing
    assert sweep.counts.shape == (3, len(sweep.edges) - 1)
    survivors = round((1 - table.loc[0.9, "sparsity measured"]) * 1776)  # kernel weights
    assert sweep.counts[2].sum() == survivors and sweep.counts[0].sum() == 1776
    assert len(list(tmp_path.glob("sweep-*.npz"))) == 1
    cached = pruning.sparsity_sweep(mlp, digits, (0.0, 0.5, 0.9), epochs=2, progress=False)
    assert cached.table.equals(table) and np.array_equal(cached.counts, sweep.counts)
    explorer = widgets.sparsity_explorer(cached)
    explorer.slider.value = 0.9
    assert "sparsity 90.0 %" in explorer.text
    with pytest.raises(ValueError, match="increasing and distinct"):
        pruning.sparsity_sweep(mlp, digits, (0.5, 0.2))


# ---------------------------------------------------------------------------- graded lab
def test_lab1_solution_scores_full_marks_and_the_untouched_lab_zero():
    from helpers.course import grading

    solutions, labs = ROOT / "solutions", ROOT / "labs"
    assert not [p for p in grading.check_labs(solutions, labs) if "lab1_pruning" in p]
    solved = grading.grade(solutions / "lab1_pruning.ipynb", solutions, timeout=900)
    assert not solved.error, solved.error
    assert solved.score == solved.max_score == 15, grading.format_result(solved)
    assert [(c.grade_id, c.max_points) for c in solved.needs_manual] == [("reflection", 3)]
    untouched = grading.grade(labs / "lab1_pruning.ipynb", solutions, timeout=900)
    assert not untouched.error, untouched.error
    assert untouched.score == 0 and untouched.max_score == 15
    assert all(c.status in ("failed", "manual") for c in untouched.cells)

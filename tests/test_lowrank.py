"""Low-rank factorization: SVD factors, exact at full rank, genuinely smaller models."""
import numpy as np
import pytest

from helpers import lowrank, measure, models
from helpers._tf import keras

RNG = np.random.default_rng(0)


def test_svd_factors_are_the_best_rank_r_approximation():
    kernel = RNG.normal(size=(60, 40))
    a, b = lowrank.svd_factors(kernel, 40)
    assert a.shape == (60, 40) and b.shape == (40, 40)
    np.testing.assert_allclose(a @ b, kernel, atol=1e-4)
    s = np.linalg.svd(kernel, compute_uv=False)
    a, b = lowrank.svd_factors(kernel, 10)
    error = np.linalg.norm(kernel - a @ b)  # Eckart-Young: the tail of the spectrum
    assert error == pytest.approx(np.sqrt(np.sum(s[10:] ** 2)), rel=1e-4)


def test_conv_kernels_are_reshaped():
    kernel = RNG.normal(size=(5, 5, 6, 16))
    a, b = lowrank.svd_factors(kernel, 16)
    assert a.shape == (150, 16) and b.shape == (16, 16)
    np.testing.assert_allclose((a @ b).reshape(kernel.shape), kernel, atol=1e-4)


def test_rank_for_energy():
    s = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert lowrank.rank_for_energy(s, 16 / 22) == 1
    assert lowrank.rank_for_energy(s, 0.75) == 2
    assert lowrank.rank_for_energy(s, 1.0) == 4
    assert lowrank.rank_for_energy(s[::-1], 0.75) == 2  # order does not matter


def test_full_rank_reproduces_the_model(lenet, mnist5k):
    full = {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84, "logits": 10}
    factored = lowrank.factorize(lenet, full, only_if_smaller=False)
    assert [layer.name for layer in factored.layers][:4] == ["conv1_u", "conv1_v", "pool1",
                                                             "conv2_u"]
    assert lowrank.factorized_ranks(factored) == full
    x = mnist5k.x_test[:200]
    np.testing.assert_allclose(factored.predict(x, verbose=0), lenet.predict(x, verbose=0),
                               atol=1e-3)


def test_smaller_rank_gives_a_smaller_model(lenet, mnist5k):
    factored = lowrank.factorize(lenet, {"fc1": 16, "fc2": 16})
    shapes = {w.name.split(":")[0]: tuple(w.shape) for w in factored.weights}
    assert shapes["fc1_u/kernel"] == (400, 16) and shapes["fc1_v/kernel"] == (16, 120)
    assert shapes["fc1_v/bias"] == (120,) and "fc1_u/bias" not in shapes
    assert shapes["fc2_u/kernel"] == (120, 16) and shapes["fc2_v/kernel"] == (16, 84)
    saved = (400 * 120 - 16 * 520) + (120 * 84 - 16 * 204)
    assert measure.count_params(lenet) - measure.count_params(factored) == saved
    float32_bytes = 4 * measure.count_params(lenet)  # the original's TFLite file is larger
    assert len(measure.to_tflite(factored)) < 0.75 * float32_bytes
    accuracy = measure.accuracy(factored, mnist5k.x_test, mnist5k.y_test)
    assert accuracy > 0.9  # before any fine-tuning


def test_energy_picks_ranks_and_skips_layers_that_would_grow(lenet):
    factored = lowrank.factorize(lenet, energy=0.9)
    ranks = lowrank.factorized_ranks(factored)
    spectra = lowrank.singular_values(lenet)
    for name, spectrum in spectra.items():
        rank = lowrank.rank_for_energy(spectrum, 0.9)
        shrinks = rank <= lowrank.break_even_rank(lenet.get_layer(name).get_weights()[0].shape)
        assert ranks.get(name) == (rank if shrinks else None)
    assert "fc1" in ranks and "logits" not in ranks  # 84x10 needs a rank that would grow it
    assert measure.count_params(factored) < measure.count_params(lenet)


def test_conv_factorization_keeps_strides_and_padding():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(12, 12, 3)),
                              keras.layers.Conv2D(8, 3, strides=2, padding="same",
                                                  activation="relu", name="conv")])
    factored = lowrank.factorize(model, 3, only_if_smaller=False)
    assert factored.output_shape == model.output_shape == (None, 6, 6, 8)
    assert factored.get_layer("conv_v").kernel_size == (1, 1)
    assert factored.get_layer("conv_u").strides == (2, 2)
    full = lowrank.factorize(model, 8, only_if_smaller=False)
    x = RNG.normal(size=(4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(full(x).numpy(), model(x).numpy(), atol=1e-4)


def test_fine_tuning_recovers_accuracy(lenet, mnist5k):
    factored = lowrank.factorize(lenet, {"fc1": 4})
    before = measure.accuracy(factored, mnist5k.x_test, mnist5k.y_test)
    lowrank.fine_tune(factored, mnist5k, epochs=1)
    assert measure.accuracy(factored, mnist5k.x_test, mnist5k.y_test) > before + 0.01


def test_bad_arguments(lenet):
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 40\].*got 41"):
        lowrank.svd_factors(np.ones((60, 40)), 41)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 6\].*got 0"):
        lowrank.factorize(lenet, 0)
    with pytest.raises(ValueError, match=r"ranks\['fc2'\] must be an integer in \[1, 84\]"):
        lowrank.factorize(lenet, {"fc2": 100})
    with pytest.raises(ValueError, match="cannot be factorized"):
        lowrank.factorize(lenet, {"pool1": 2})
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\], got 1.5"):
        lowrank.factorize(lenet, energy=1.5)
    with pytest.raises(ValueError, match="exactly one of ranks"):
        lowrank.factorize(lenet, 4, energy=0.9)
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        lowrank.svd_factors(np.ones(5), 1)
    with pytest.raises(ValueError, match="Sequential"):
        inputs = keras.Input((4,))
        lowrank.factorize(keras.Model(inputs, keras.layers.Dense(2)(inputs)), 1)


# ---------------------------------------------------------------- lab 5
def test_lab5_solution_scores_full_marks_and_the_lab_scores_zero():
    from pathlib import Path

    from helpers.course import grading

    repo = Path(__file__).resolve().parent.parent
    solutions, lab = repo / "solutions", repo / "labs" / "lab5_low_rank.ipynb"
    problems = grading.check_labs(solutions, repo / "labs")
    assert not [problem for problem in problems if "lab5_low_rank" in problem], problems
    solved = grading.grade(solutions / "lab5_low_rank.ipynb", solutions, timeout=600)
    assert solved.error == "" and solved.max_score == 14
    assert solved.score == solved.max_score, grading.format_result(solved)
    assert [cell.grade_id for cell in solved.needs_manual] == ["why_ranks"]
    untouched = grading.grade(lab, solutions, timeout=600)
    assert untouched.error == "" and untouched.score == 0, grading.format_result(untouched)
    assert untouched.max_score == solved.max_score


# ---------------------------------------------------------------- notebook experiments
def test_tucker2_is_exact_at_full_rank_and_improves_with_rank():
    kernel = RNG.normal(size=(5, 5, 6, 16)).astype(np.float32)
    core, u_in, u_out = lowrank.tucker2(kernel, 6, 16)
    assert core.shape == (5, 5, 6, 16) and u_in.shape == (6, 6) and u_out.shape == (16, 16)
    np.testing.assert_allclose(lowrank.tucker2_reconstruct(core, u_in, u_out), kernel,
                               atol=1e-4)
    errors = [np.linalg.norm(lowrank.tucker2_reconstruct(*lowrank.tucker2(kernel, r, 2 * r))
                             - kernel) for r in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2] > 0
    core, u_in, u_out = lowrank.tucker2(kernel, 3, 8)
    assert lowrank.tucker2_params(kernel.shape, 3, 8) == core.size + u_in.size + u_out.size
    for bad in ({"rank_in": 0, "rank_out": 4}, {"rank_in": 2, "rank_out": 17}):
        with pytest.raises(ValueError, match=list(bad)[0] if bad["rank_in"] == 0 else "rank_out"):
            lowrank.tucker2(kernel, **bad)
    with pytest.raises(ValueError, match="4-D"):
        lowrank.tucker2(kernel[0], 1, 1)


def test_rank_sweep_counts_params_and_keeps_accuracy_at_high_rank(lenet, mnist5k):
    ranks = [1, 2, 4, 8, 16, 32, 64, 96]  # the notebook's sweep, shared through the cache
    sweep = lowrank.rank_sweep(lenet, mnist5k, "fc1", ranks)
    assert list(sweep.index) == ranks
    base = measure.count_params(lenet)
    assert sweep.attrs["params"] == base
    assert sweep.params[2] == base - 400 * 120 + 2 * (400 + 120)
    # measured (seed 0): 98.7 % original, 98.7 % at rank 64, 45.5 % at rank 2
    assert abs(sweep.accuracy[64] - sweep.attrs["accuracy"]) <= 0.01
    assert sweep.accuracy[2] < sweep.accuracy[64] - 0.1
    assert (sweep.latency_ms > 0).all()
    with pytest.raises(ValueError, match="layer must name"):
        lowrank.rank_sweep(lenet, mnist5k, "pool1", [2], cache=False)
    with pytest.raises(ValueError, match="rank must be an integer in"):
        lowrank.rank_sweep(lenet, mnist5k, "fc1", [0], cache=False)


def test_energy_study_picks_larger_ranks_for_more_energy(mnist5k):
    mlp = models.pretrained("mlp", mnist5k, progress=False)
    study = lowrank.energy_study(mlp, mnist5k, energies=(0.5, 0.99), cache=False)
    assert list(study.layer.unique()) == ["hidden", "logits"]
    for _, rows in study.groupby("layer"):
        assert rows["rank"].is_monotonic_increasing and (rows["rank"] <= rows.full_rank).all()
    base = measure.accuracy(mlp, mnist5k.x_test, mnist5k.y_test)
    # 99 % of the energy of one layer: measured (seed 0) within 0.5 points of the original
    high = study[study.energy == 0.99]
    assert (abs(high.accuracy - base) <= 0.02).all(), high
    with pytest.raises(ValueError, match="energy"):
        lowrank.energy_study(mlp, mnist5k, energies=(1.5,), cache=False)

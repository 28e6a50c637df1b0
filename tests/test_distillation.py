"""helpers.distillation: the maths against NumPy, the Distiller, the experiment helpers,
the temperature explorer, and the graded lab (solution full marks, untouched lab zero)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import distillation, models, plots, widgets
from helpers._tf import keras, tf

REPO = Path(__file__).resolve().parent.parent
LAB = "lab3_distillation.ipynb"


# ---------------------------------------------------------------- an independent reference
def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kl(teacher, student, temperature):
    log_t, log_s = np_log_softmax(teacher / temperature), np_log_softmax(student / temperature)
    return (np.exp(log_t) * (log_t - log_s)).sum(axis=-1).mean()


def np_loss(labels, student, teacher, temperature, alpha):
    ce = -np_log_softmax(student)[np.arange(len(labels)), labels].mean()
    return alpha * ce + (1 - alpha) * temperature ** 2 * np_kl(teacher, student, temperature)


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=64)
    student = rng.normal(0, 2, size=(64, 10)).astype(np.float32)
    teacher = rng.normal(0, 6, size=(64, 10)).astype(np.float32)
    return labels, student, teacher


# ---------------------------------------------------------------- softmax with temperature
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_softmax_with_temperature_matches_numpy(batch, temperature):
    _, logits, _ = batch
    got = distillation.softmax_with_temperature(logits, temperature).numpy()
    np.testing.assert_allclose(got, np.exp(np_log_softmax(logits / temperature)), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-6)


def test_higher_temperature_flattens_but_keeps_the_ranking(batch):
    _, logits, _ = batch
    sharp = distillation.softmax_with_temperature(logits, 1.0).numpy()
    soft = distillation.softmax_with_temperature(logits, 8.0).numpy()
    assert (soft.max(axis=1) < sharp.max(axis=1)).all()
    assert (distillation.entropy_bits(soft) > distillation.entropy_bits(sharp)).all()
    np.testing.assert_array_equal(soft.argmax(axis=1), sharp.argmax(axis=1))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "hot", None])
def test_softmax_rejects_bad_temperatures(bad):
    with pytest.raises(ValueError, match="temperature must be"):
        distillation.softmax_with_temperature([[1.0, 2.0]], bad)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got 0"):
        distillation.softmax_with_temperature([[1.0, 2.0]], 0)


# ---------------------------------------------------------------- the loss
@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.0), (2.0, 0.5), (4.0, 0.1),
                                                (8.0, 0.0), (3.0, 1.0), (0.5, 0.3)])
def test_loss_matches_the_numpy_reference(batch, temperature, alpha):
    labels, student, teacher = batch
    got = float(distillation.distillation_loss(labels, student, teacher, temperature, alpha))
    assert got == pytest.approx(np_loss(labels, student, teacher, temperature, alpha),
                                rel=1e-4, abs=1e-5)


def test_alpha_one_is_plain_cross_entropy(batch):
    labels, student, teacher = batch
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, student)
    for temperature in (1.0, 4.0, 10.0):  # the teacher and T no longer matter
        got = distillation.distillation_loss(labels, student, teacher, temperature, alpha=1.0)
        assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_soft_term_is_t_squared_times_the_kl_divergence(batch):
    labels, student, teacher = batch
    for temperature in (1.0, 2.0, 5.0):
        got = float(distillation.distillation_loss(labels, student, teacher, temperature, 0.0))
        assert got == pytest.approx(temperature ** 2 * np_kl(teacher, student, temperature),
                                    rel=1e-4)
    assert float(distillation.distillation_loss(labels, teacher, teacher, 4.0, 0.0)) \
        == pytest.approx(0.0, abs=1e-5)


def test_t_squared_keeps_the_soft_gradients_on_scale(batch):
    labels, student, teacher = batch
    norms = distillation.loss_gradient_norms(labels, student, teacher, (1.0, 4.0, 16.0))
    assert list(norms.columns) == ["hard term", "KL term", "KL term x T²"]
    np.testing.assert_allclose(norms["hard term"], norms["hard term"].iloc[0])  # T-free
    assert norms["KL term"].iloc[0] / norms["KL term"].iloc[-1] > 20  # fades without T²
    scaled = norms["KL term x T²"]
    assert scaled.max() / scaled.min() < 5  # stays on scale with it


def test_probability_labels_give_the_same_loss_as_integer_labels(batch):
    labels, student, teacher = batch
    one_hot = np.eye(10, dtype=np.float32)[labels]
    for alpha in (0.1, 1.0):
        assert float(distillation.distillation_loss(one_hot, student, teacher, 4.0, alpha)) == \
            pytest.approx(float(distillation.distillation_loss(labels, student, teacher, 4.0,
                                                                alpha)), rel=1e-6)


def test_loss_rejects_bad_arguments(batch):
    labels, student, teacher = batch
    loss = distillation.distillation_loss
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1"):
        loss(labels, student, teacher, temperature=-1)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        loss(labels, student, teacher, alpha=1.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got -0.1"):
        loss(labels, student, teacher, alpha=-0.1)
    with pytest.raises(ValueError, match="same shape"):
        loss(labels, student, teacher[:, :5])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\], got values from 0 to 10"):
        loss(np.array([0, 10]), student[:2], teacher[:2])
    with pytest.raises(ValueError, match="y_true must be integer labels"):
        loss(np.ones((64, 3)), student, teacher)


# ---------------------------------------------------------------- dark knowledge
def test_temperature_table_softens_with_temperature():
    table = distillation.temperature_table([6.0, 2.0, 0.0], (1.0, 4.0, 50.0), ["a", "b", "c"])
    assert list(table.columns) == ["a", "b", "c", "entropy bits"]
    np.testing.assert_allclose(table[["a", "b", "c"]].sum(axis=1), 1.0, rtol=1e-6)
    assert table["entropy bits"].is_monotonic_increasing
    assert table.loc[50.0, "entropy bits"] == pytest.approx(np.log2(3), abs=0.01)
    with pytest.raises(ValueError, match="one example's vector"):
        distillation.temperature_table(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation.temperature_table([1.0, 2.0], (1.0, 0.0))
    with pytest.raises(ValueError, match="class_names must have 3 names, got 2"):
        distillation.temperature_table([1.0, 2.0, 3.0], class_names=["a", "b"])


def test_entropy_bits():
    assert distillation.entropy_bits(np.full(10, 0.1)) == pytest.approx(np.log2(10))
    assert distillation.entropy_bits(np.eye(4)[0]) == pytest.approx(0.0, abs=1e-9)


def test_class_similarity_finds_the_look_alike_class():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    logits = rng.normal(0, 0.1, size=(60, 3)).astype(np.float32)
    logits[np.arange(60), labels] += 6.0
    logits[labels == 0, 2] += 4.0  # every 0 looks a bit like a 2
    similarity = distillation.class_similarity(logits, labels, 2.0, ["x", "y", "z"])
    np.testing.assert_allclose(similarity.sum(axis=1), 1.0, rtol=1e-5)
    top = distillation.similar_classes(similarity, top=1)
    assert (top.loc[0, "true class"], top.loc[0, "looks like"]) == ("x", "z")
    assert len(distillation.similar_classes(similarity, top=4)) == 4
    with pytest.raises(ValueError, match="one label per row"):
        distillation.class_similarity(logits, labels[:10])
    with pytest.raises(ValueError, match="top must be an integer >= 1, got 0"):
        distillation.similar_classes(similarity, top=0)


# ---------------------------------------------------------------- models and the Distiller
def test_student_is_more_than_ten_times_smaller_than_the_teacher():
    student = distillation.student_cnn()
    assert student.count_params() == 5_370
    assert models.build("lenet5").count_params() / student.count_params() >= 10
    assert distillation.student_cnn((8, 8, 1)).output_shape == (None, 10)
    with pytest.raises(ValueError, match="input_shape"):
        distillation.student_cnn((28, 28))


@pytest.fixture(scope="module")
def digits_teacher(digits):
    """A quickly trained teacher on 8x8 digits (an MLP is enough there)."""
    models.set_seed(0)
    teacher = models.compile_model(models.build("mlp", digits.input_shape, hidden=64), 1e-2)
    teacher.fit(digits.x_train, digits.y_train, epochs=15, batch_size=64, verbose=0)
    assert teacher.evaluate(digits.x_test, digits.y_test, verbose=0)[1] > 0.9
    return teacher


def test_distiller_rejects_bad_arguments(digits_teacher):
    student = distillation.student_cnn((8, 8, 1))
    with pytest.raises(ValueError, match=r"same output shape, got \(10,\) \(teacher\) and "
                                         r"\(5,\) \(student\)"):
        distillation.Distiller(digits_teacher, distillation.student_cnn((8, 8, 1), 5))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        distillation.Distiller(digits_teacher, student, temperature=0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 2"):
        distillation.Distiller(digits_teacher, student, alpha=2)
    with pytest.raises(ValueError, match="loss_fn must be callable"):
        distillation.Distiller(digits_teacher, student, loss_fn="kl")
    with pytest.raises(ValueError, match="teacher must be a Keras model"):
        distillation.Distiller("lenet5", student)


def test_distiller_trains_the_student_and_leaves_the_teacher_alone(digits, digits_teacher):
    models.set_seed(0)
    student = distillation.student_cnn(digits.input_shape)
    teacher_before = [w.copy() for w in digits_teacher.get_weights()]
    distiller = distillation.Distiller(digits_teacher, student, temperature=4.0, alpha=0.1)
    distiller.compile(keras.optimizers.Adam(5e-3), metrics=["accuracy"])
    before = distiller.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    history = distiller.fit(digits.x_train, digits.y_train, epochs=10, batch_size=64, verbose=0)
    loss, after = distiller.evaluate(digits.x_test, digits.y_test, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert before < 0.3 and after > 0.8, (before, after)
    assert distiller.predict(digits.x_test[:5], verbose=0).shape == (5, 10)
    for a, b in zip(teacher_before, digits_teacher.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_distiller_trains_with_the_given_loss_fn(digits, digits_teacher):
    calls = []

    def no_signal(y, student_logits, teacher_logits, temperature, alpha):
        calls.append((temperature, alpha))
        return 0.0 * tf.reduce_sum(student_logits)

    student = distillation.student_cnn(digits.input_shape)
    start = [w.copy() for w in student.get_weights()]
    distiller = distillation.Distiller(digits_teacher, student, 3.0, 0.2, loss_fn=no_signal)
    distiller.compile(keras.optimizers.Adam(1e-2))
    distiller.fit(digits.x_train, digits.y_train, epochs=1, batch_size=256, verbose=0)
    assert calls and calls[0] == (3.0, 0.2)
    for a, b in zip(start, student.get_weights()):  # zero gradients: nothing moved
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the experiment helpers
def test_compare_students_trains_once_then_loads(tmp_path, monkeypatch, digits,
                                                 digits_teacher):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    recipe = {"epochs": 8, "learning_rate": 5e-3}
    results = distillation.compare_students(digits_teacher, digits, seeds=(0,), **recipe)
    assert list(results["method"]) == ["scratch", "distilled"]
    assert list(results.columns) == ["seed", "method", "params", "accuracy %",
                                     "agrees with teacher %", "KL to teacher"]
    assert (results["params"] == distillation.student_cnn(digits.input_shape).count_params()).all()
    assert results["accuracy %"].between(60, 100).all()
    scratch_kl, distilled_kl = results["KL to teacher"]
    assert distilled_kl < scratch_kl  # the distilled student imitates the teacher more closely
    assert len(list(tmp_path.glob("student-*.weights.h5"))) == 2

    monkeypatch.setattr(distillation.Distiller, "fit", lambda *a, **k: pytest.fail("retrained"))
    again = distillation.compare_students(digits_teacher, digits, seeds=(0,), **recipe)
    pd.testing.assert_frame_equal(results, again)


def test_train_student_rejects_bad_arguments(digits, digits_teacher):
    train = distillation.train_student
    with pytest.raises(ValueError, match=r"method must be one of \('scratch', 'distilled'\)"):
        train(digits_teacher, digits, "teacher")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        train(digits_teacher, digits, epochs=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        train(digits_teacher, digits, batch_size=0)
    with pytest.raises(ValueError, match=r"learning_rate must be in \(0, 1\), got 0"):
        train(digits_teacher, digits, learning_rate=0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -4"):
        train(digits_teacher, digits, temperature=-4)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 3"):
        train(digits_teacher, digits, alpha=3)
    with pytest.raises(ValueError, match="same output shape"):
        train(digits_teacher, digits, build_student=lambda shape, classes:
              distillation.student_cnn(shape, 5), cache=False)
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        distillation.compare_students(digits_teacher, digits, seeds=())


def test_summarize_measures_the_gap_closed():
    results = pd.DataFrame({"seed": [0, 1, 0, 1], "method": ["scratch", "scratch",
                                                             "distilled", "distilled"],
                            "accuracy %": [90.0, 92.0, 94.0, 96.0]})
    summary = distillation.summarize(results, 0.99)
    assert list(summary.index) == ["scratch", "distilled"]
    assert summary.loc["scratch", "mean %"] == 91.0
    assert summary.loc["distilled", "std %"] == pytest.approx(np.std([94, 96], ddof=1), abs=0.01)
    assert summary.loc["scratch", "gap closed %"] == 0.0
    assert summary.loc["distilled", "gap closed %"] == 50.0  # 4 of the 8 points to 99 %
    with pytest.raises(ValueError, match=r"teacher_accuracy must be a fraction in \[0, 1\], "
                                         r"got 98.4"):
        distillation.summarize(results, 98.4)
    with pytest.raises(ValueError, match="'scratch' rows"):
        distillation.summarize(results[results.method == "distilled"], 0.99)
    with pytest.raises(ValueError, match="missing columns"):
        distillation.summarize(results.drop(columns="accuracy %"), 0.99)


# ---------------------------------------------------------------- explorer and plots
def test_temperature_explorer_answers_from_the_table_fast():
    table = distillation.temperature_table([8.0, 1.0, 5.0, 0.0], (1.0, 4.0, 16.0))
    explorer = widgets.temperature_explorer(table, true_class=0, image=np.eye(8))
    first_image = explorer.image.value
    assert "T = 1" in explorer.text
    assert f"most likely 0: {100 * table.loc[1.0, '0']:.1f} %, 2: " in explorer.text
    explorer.slider.value = 16.0
    assert "T = 16" in explorer.text and explorer.image.value != first_image
    assert f"entropy {table.loc[16.0, 'entropy bits']:.2f} bits" in explorer.text
    explorer.slider.value = 4.0
    explorer.slider.value = 16.0  # a frame seen before is a look-up
    assert explorer.last_update_ms < 50
    with pytest.raises(ValueError, match="entropy bits"):
        widgets.temperature_explorer(table.drop(columns="entropy bits"))
    with pytest.raises(ValueError, match=r"true_class must be an integer in \[0, 3\], got 7"):
        widgets.temperature_explorer(table, true_class=7)


def test_plots_draw_soft_targets_and_the_comparison():
    ax = plots.soft_targets([0.7, 0.2, 0.1], ["a", "b", "c"], temperature=4, true_class=0)
    assert len(ax.patches) == 3 and "T = 4" in ax.get_title()
    results = pd.DataFrame({"method": ["scratch", "scratch", "distilled", "distilled"],
                            "accuracy %": [95.0, 96.0, 95.5, 96.5]})
    ax = plots.student_comparison(results, teacher_accuracy=98.4)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["scratch", "distilled"]
    assert ax.get_ylim()[0] < 95.0 < 98.4 < ax.get_ylim()[1]
    plots.plt.close("all")


# ---------------------------------------------------------------- the graded lab
@pytest.fixture(scope="module")
def lab3(tmp_path_factory):
    from helpers.course import grading

    solutions = tmp_path_factory.mktemp("solutions")
    shutil.copy(REPO / "solutions" / LAB, solutions / LAB)
    labs = tmp_path_factory.mktemp("labs")
    grading.generate_labs(solutions, labs)
    return solutions, labs


def test_lab_is_generated_and_in_sync(lab3):
    _, labs = lab3
    committed = REPO / "labs" / LAB
    assert committed.read_bytes() == (labs / LAB).read_bytes(), \
        "labs/ is stale: run `python -m helpers.course generate`"
    text = committed.read_text()
    for secret in ("BEGIN SOLUTION", "HIDDEN TESTS", "tf.nn.log_softmax(t / temperature",
                   "_reference(", "fresh_teacher", "patient training"):
        assert secret not in text, secret


def test_solution_scores_full_marks_and_the_untouched_lab_zero(lab3):
    from helpers.course import grading

    solutions, labs = lab3
    solved = grading.grade(REPO / "solutions" / LAB, solutions, timeout=600)
    assert not solved.error, solved.error
    assert solved.score == solved.max_score == 12, grading.format_result(solved)
    assert [c.grade_id for c in solved.needs_manual] == ["why_no_gain"]

    untouched = grading.grade(labs / LAB, solutions, timeout=600)
    assert not untouched.error, untouched.error
    assert untouched.score == 0 and untouched.max_score == 12, grading.format_result(untouched)

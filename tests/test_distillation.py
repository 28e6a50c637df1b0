"""helpers.distillation: the maths against NumPy, the Distiller, the experiment helpers,
the temperature explorer, and the graded lab (solution full marks, untouched lab zero)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import data, distillation, measure, models, plots, widgets
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
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\] \(or -1: unlabelled\), "
                                         r"got values from 0 to 10"):
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
def test_labelled_subset_is_balanced_seeded_and_checked():
    labels = np.repeat(np.arange(10), 40)
    chosen = distillation.labelled_subset(labels, 100, seed=0)
    assert len(chosen) == 100 and len(set(chosen)) == 100
    assert (np.bincount(labels[chosen], minlength=10) == 10).all()
    np.testing.assert_array_equal(chosen, distillation.labelled_subset(labels, 100, seed=0))
    assert set(chosen) != set(distillation.labelled_subset(labels, 100, seed=1))
    assert len(distillation.labelled_subset(labels, None)) == 400
    assert len(distillation.labelled_subset(labels, 400)) == 400
    with pytest.raises(ValueError, match="labels must be between 10 .* and 400, got 5"):
        distillation.labelled_subset(labels, 5)


def test_training_set_hides_labels_from_the_distilled_student(digits):
    x, y = distillation.training_set(digits, "scratch", labels=100, seed=0)
    assert x.shape == (100,) + digits.input_shape and (y >= 0).all()
    x_all, targets = distillation.training_set(digits, "distilled", labels=100, seed=0)
    assert len(x_all) == len(digits.x_train)  # every image is in the transfer set
    labelled = targets != distillation.UNLABELLED
    assert labelled.sum() == 100
    np.testing.assert_array_equal(x_all[labelled], x)  # the same 100 labelled images
    np.testing.assert_array_equal(targets[labelled], y)
    x_no3, y_no3 = distillation.training_set(digits, "distilled", omit_class=3)
    assert len(x_no3) == np.sum(digits.y_train != 3) and 3 not in set(y_no3)
    with pytest.raises(ValueError, match=r"omit_class must be in \[0, 9\], got 10"):
        distillation.training_set(digits, "scratch", omit_class=10)


def test_unlabelled_examples_get_no_hard_label_gradient(batch):
    labels, student, teacher = batch
    hidden = labels.copy()
    hidden[::2] = distillation.UNLABELLED
    kept = hidden != distillation.UNLABELLED
    got = float(distillation.distillation_loss(hidden, student, teacher, 4.0, 0.3))
    soft = np_loss(labels, student, teacher, 4.0, 0.0)  # over every example
    hard = np_loss(labels[kept], student[kept], teacher[kept], 4.0, 1.0)  # labelled only
    assert got == pytest.approx(0.3 * hard + 0.7 * soft, rel=1e-5)
    logits = tf.constant(student)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = distillation.distillation_loss(hidden, logits, teacher, 4.0, 1.0)
    gradient = tape.gradient(loss, logits).numpy()
    assert np.abs(gradient[~kept]).max() == 0.0 and np.abs(gradient[kept]).max() > 0


def test_the_teacher_labels_the_same_augmented_batch_online(digits, monkeypatch):
    """A teacher identical to the untrained student gives identical logits on the first step
    only if both see the same (augmented) images."""
    models.set_seed(0)
    twin = distillation.student_cnn(digits.input_shape)
    smallest = tf.Variable(np.inf)
    loss = distillation.distillation_loss

    def recording_loss(y, student_logits, teacher_logits, temperature, alpha):
        smallest.assign(tf.minimum(smallest, tf.reduce_max(tf.abs(student_logits
                                                                  - teacher_logits))))
        return loss(y, student_logits, teacher_logits, temperature, alpha)

    monkeypatch.setattr(distillation.training, "distillation_loss", recording_loss)
    distillation.train_student(twin, digits, "distilled", seed=0, labels=50, steps=3,
                               cache=False)
    assert float(smallest.numpy()) < 1e-5


def test_train_student_trains_once_then_loads(tmp_path, monkeypatch, digits, digits_teacher):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    recipe = {"labels": 100, "steps": 300, "learning_rate": 5e-3}
    accuracies = {}
    for method in distillation.METHODS:
        student = distillation.train_student(digits_teacher, digits, method, **recipe)
        accuracies[method] = measure.accuracy(student, digits.x_test, digits.y_test)
        assert student.count_params() == distillation.student_cnn(digits.input_shape).count_params()
    assert min(accuracies.values()) > 0.5, accuracies
    assert len(list(tmp_path.glob("student-*.weights.h5"))) == 2

    monkeypatch.setattr(distillation.Distiller, "fit", lambda *a, **k: pytest.fail("retrained"))
    again = distillation.train_student(digits_teacher, digits, "distilled", **recipe)
    assert measure.accuracy(again, digits.x_test, digits.y_test) == accuracies["distilled"]


def test_train_student_rejects_bad_arguments(digits, digits_teacher):
    train = distillation.train_student
    with pytest.raises(ValueError, match=r"method must be one of \('scratch', 'distilled'\)"):
        train(digits_teacher, digits, "teacher")
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        train(digits_teacher, digits, steps=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        train(digits_teacher, digits, batch_size=0)
    with pytest.raises(ValueError, match=r"learning_rate must be in \(0, 1\), got 0"):
        train(digits_teacher, digits, learning_rate=0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -4"):
        train(digits_teacher, digits, temperature=-4)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 3"):
        train(digits_teacher, digits, alpha=3)
    with pytest.raises(ValueError, match="labels must be an integer >= 1, got 0"):
        train(digits_teacher, digits, labels=0)
    with pytest.raises(ValueError, match="same output shape"):
        train(digits_teacher, digits, build_student=lambda shape, classes:
              distillation.student_cnn(shape, 5), cache=False)
    with pytest.raises(ValueError, match="at least one value"):
        distillation.label_scarce(digits, seeds=())


def test_summarize_measures_the_gap_closed():
    rows = [(seed, 300, method, accuracy) for seed, (s, d, t) in
            enumerate([(90.0, 94.0, 98.0), (92.0, 95.0, 99.0)])
            for method, accuracy in (("scratch", s), ("distilled", d), ("teacher", t))]
    results = pd.DataFrame(rows, columns=["seed", "labels", "method", "accuracy %"])
    summary = distillation.summarize(results)
    row = summary.loc[300]
    assert (row["scratch %"], row["distilled %"], row["teacher %"]) == (91.0, 94.5, 98.5)
    assert row["gain"] == 3.5 and row["gain std"] == pytest.approx(np.std([4, 3], ddof=1),
                                                                   abs=0.01)
    assert row["gap closed %"] == pytest.approx(100 * 3.5 / 7.5, abs=0.01)
    assert row["SE"] == pytest.approx(100 * np.sqrt(0.91 * 0.09 / 1000), abs=0.01)
    with pytest.raises(ValueError, match="missing columns"):
        distillation.summarize(results.drop(columns="labels"))
    with pytest.raises(ValueError, match="'teacher', 'scratch' and 'distilled'"):
        distillation.summarize(results[results.method != "teacher"])


def test_bias_shift_makes_the_class_win_on_the_asked_share():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(1000, 10))
    logits[:, 3] -= 6.0  # a class the student learnt never to predict
    for fraction in (0.0, 0.1, 0.5):
        shifted = logits.copy()
        shifted[:, 3] += distillation.bias_shift(logits, 3, fraction)
        assert np.mean(shifted.argmax(axis=1) == 3) == pytest.approx(fraction, abs=0.002)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got 2"):
        distillation.bias_shift(logits, 3, 2)


def test_the_lessons_train_step_agrees_with_the_distiller(digits, digits_teacher):
    """Lesson 03 writes the training step with tf.GradientTape in a cell; it must do what
    Distiller.train_step does: the same loss and the same update from the same weights."""
    notebook = json.loads((REPO / "lessons" / "03_distillation.ipynb").read_text())
    source = next("".join(cell["source"]) for cell in notebook["cells"]
                  if "inline-train-step" in cell["metadata"].get("tags", []))
    assert "tf.GradientTape" in source and "inspect" not in source
    models.set_seed(0)
    student = distillation.student_cnn(digits.input_shape)
    namespace = {"tf": tf, "keras": keras, "distillation": distillation,
                 "teacher": digits_teacher, "student": student}
    exec(source, namespace)  # the cell as the lesson shows it
    x, y = digits.x_train[:64], digits.y_train[:64]
    start = student.get_weights()
    ours = [float(namespace["train_step"](x, y)) for _ in range(3)]
    ours_weights = student.get_weights()
    student.set_weights(start)
    distiller = distillation.Distiller(digits_teacher, student, temperature=4.0, alpha=0.5)
    distiller.compile(keras.optimizers.Adam(1e-3))
    helper = float(distiller.train_step((x, y))["loss"])
    for _ in range(2):
        distiller.train_step((x, y))
    assert ours[0] == pytest.approx(helper, rel=1e-5)
    assert ours[2] < ours[0]  # it learns
    for a, b in zip(ours_weights, student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------- the lesson's experiments
# These train the lesson's students on mnist5k once (the same cache as lessons/03 and lab 3):
# 3 teachers, 2 x 4 x 3 label-scarce and 2 x 3 omitted-class students.
@pytest.fixture(scope="module")
def mnist5k():
    return data.load_dataset("mnist5k")


@pytest.fixture(scope="module")
def label_scarce_summary(mnist5k):
    return distillation.summarize(distillation.label_scarce(mnist5k))


def test_distillation_closes_at_least_half_the_gap_with_300_labels(label_scarce_summary):
    # Issue 15's floor is 50 % at N = 300, mean of 3 seeds. Measured (seeds 0-2, RECIPE):
    # scratch 92.1 / 94.2 / 93.4 %, distilled 95.6 / 96.1 / 96.0 %, teachers 98.7 / 98.0 /
    # 98.2 %: 52.6 % of the gap (per seed 53 / 50 / 54 %, so the mean of 3 has an SE of about
    # 1.2 points). 45 is the floor minus 2 SEs of the gap-closed mean, so another seed shift
    # (EDGE_AI_SEED) does not fail by chance; the lesson prints the measured share.
    row = label_scarce_summary.loc[300]
    assert row["gap closed %"] >= 45, label_scarce_summary
    # the gain (2.67 points, paired std 0.80) is far outside the test noise (SE 0.79)
    assert row["gain"] > 2 * row["SE"], label_scarce_summary


def test_the_teacher_helps_most_when_labels_are_scarcest(label_scarce_summary):
    gains = label_scarce_summary["gain"]
    assert gains.loc[100] > gains.loc[4000] and gains.loc[300] > gains.loc[4000], gains
    full = label_scarce_summary.loc[4000]  # the control: labels alone already do well
    assert full["scratch %"] > label_scarce_summary.loc[300, "scratch %"]


def test_a_student_that_never_saw_a_3_learns_3s_from_the_teacher(mnist5k):
    omitted = distillation.omitted_class(mnist5k, digit=3)
    means = omitted.groupby("method").mean(numeric_only=True)
    distilled = means.loc["distilled"]
    assert distilled["digit % corrected"] > distilled["digit %"]
    # paired over seeds: the soft targets, not the bias trick, recognize the unseen digit.
    # mnist5k has about 100 test 3s, so one accuracy on them has an SE of up to 5 points:
    # 10 points is two SEs. Measured (seeds 0/1): distilled 88 / 85 %, scratch 18 / 0 %.
    per_seed = omitted.pivot(index="seed", columns="method", values="digit % corrected")
    assert (per_seed["distilled"] > per_seed["scratch"] + 10).all(), omitted


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
    seen = explorer.image.value
    explorer.slider.value = 4.0
    # a frame seen before is a look-up, never drawn again (its speed is the benchmark's job)
    explorer._render = lambda value: pytest.fail(f"frame for T = {value} drawn twice")
    explorer.slider.value = 16.0
    assert explorer.image.value == seen and "T = 16" in explorer.text
    with pytest.raises(ValueError, match="entropy bits"):
        widgets.temperature_explorer(table.drop(columns="entropy bits"))
    with pytest.raises(ValueError, match=r"true_class must be an integer in \[0, 3\], got 7"):
        widgets.temperature_explorer(table, true_class=7)


def test_plots_draw_soft_targets_and_the_label_scarce_curves():
    ax = plots.soft_targets([0.7, 0.2, 0.1], ["a", "b", "c"], temperature=4, true_class=0)
    assert len(ax.patches) == 3 and "T = 4" in ax.get_title()
    summary = pd.DataFrame({"scratch %": [88.0, 94.0], "scratch std": [2.0, 0.3],
                            "distilled %": [95.0, 96.0], "distilled std": [0.5, 0.4],
                            "teacher %": [98.4, 98.4]}, index=pd.Index([100, 4000],
                                                                     name="labels"))
    ax = plots.label_scarce(summary)
    assert [line.get_label() for line in ax.get_lines()][-1] == "teacher: 98.4 %"
    np.testing.assert_allclose(np.asarray(ax.get_lines()[0].get_ydata(), float), [88.0, 94.0])
    assert ax.get_xscale() == "log"
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
                   "_reference(", "fresh_teacher", "baseline_accuracy", "as DistilBERT did"):
        assert secret not in text, secret


def test_solution_scores_full_marks_and_the_untouched_lab_zero(lab3):
    from helpers.course import grading

    solutions, labs = lab3
    solved = grading.grade(REPO / "solutions" / LAB, solutions, timeout=600)
    assert not solved.error, solved.error
    assert solved.score == solved.max_score == 13, grading.format_result(solved)
    assert [c.grade_id for c in solved.needs_manual] == ["why_no_gain"]

    untouched = grading.grade(labs / LAB, solutions, timeout=600)
    assert not untouched.error, untouched.error
    assert untouched.score == 0 and untouched.max_score == 13, grading.format_result(untouched)

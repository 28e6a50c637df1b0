import gzip

import numpy as np
import pytest
import tf_keras as keras

from helpers import measure


@pytest.fixture(scope="module")
def tiny():
    """Dense(4 -> 3): 12 kernel weights + 3 biases = 15 parameters."""
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)),
                              keras.layers.Dense(3, name="dense")])
    kernel = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    model.layers[0].set_weights([kernel, np.zeros(3, np.float32)])
    return model



def test_sparsity_counts_every_layer_after_strip_clustering():
    """strip_clustering names every kernel ``kernel:0``; each must still count."""
    import tensorflow_model_optimization as tfmot

    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)),
                              keras.layers.Dense(8, name="a"), keras.layers.Dense(2, name="b")])
    api = tfmot.clustering.keras
    clustered = api.cluster_weights(model, number_of_clusters=2,
                                    cluster_centroids_init=api.CentroidInitialization.LINEAR)
    stripped = api.strip_clustering(clustered)
    first = stripped.layers[0]
    first.set_weights([np.zeros_like(first.get_weights()[0]), first.get_weights()[1]])
    assert len(measure.kernels(stripped)) == 2
    assert measure.sparsity(stripped) == pytest.approx(32 / (32 + 16))

@pytest.fixture(scope="module")
def trained(digits):
    from helpers import models

    model = models.compile_model(models.build("mlp", digits.input_shape), 1e-2)
    models.train(model, digits, epochs=3, progress=False)
    return model


def test_counts_on_a_tiny_model(tiny):
    assert measure.count_params(tiny) == 15
    assert measure.count_nonzero(tiny) == 12  # biases are zero
    assert measure.sparsity(tiny) == 0.0  # sparsity counts kernels only


def test_sparsity_of_a_hand_made_mask(tiny):
    mask = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [1, 1, 1]], dtype=np.float32)
    assert measure.sparsity(mask) == pytest.approx(4 / 12)
    clone = keras.models.clone_model(tiny)
    clone.set_weights([tiny.get_weights()[0] * mask, np.ones(3, np.float32)])
    assert measure.sparsity(clone) == pytest.approx(4 / 12)
    assert measure.count_nonzero(clone) == 8 + 3
    with pytest.raises(ValueError, match="empty"):
        measure.sparsity(np.array([]))


def test_sizes_are_real_files(tiny):
    flatbuffer = measure.to_tflite(tiny)
    assert flatbuffer[4:8] == b"TFL3"  # the TFLite file identifier
    assert len(flatbuffer) > 15 * 4  # weights plus the graph
    assert measure.keras_bytes(tiny) > 15 * 4
    assert measure.gzip_bytes(flatbuffer) == len(gzip.compress(flatbuffer, 9, mtime=0))
    zeros, noise = bytes(40_000), np.random.default_rng(0).bytes(40_000)
    assert measure.gzip_bytes(zeros) < 200 < 39_000 < measure.gzip_bytes(noise)


def test_to_tflite_converts_a_changed_model_again(tiny, monkeypatch, tmp_path):
    """Flatbuffers are stored by content: the same model (even another object, as in the
    next session) converts once; new weights or a new layer name, a new flatbuffer."""
    from helpers import tflite

    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))  # other tests converted `tiny` already
    conversions = []
    convert = tflite.convert
    monkeypatch.setattr(tflite, "convert", lambda *a: conversions.append(1) or convert(*a))
    clone = keras.models.clone_model(tiny)
    clone.set_weights(tiny.get_weights())
    first = measure.to_tflite(clone)
    assert measure.to_tflite(clone) == first and len(conversions) == 1
    again = keras.models.clone_model(clone)
    again.set_weights(clone.get_weights())
    assert measure.to_tflite(again) == first and len(conversions) == 1
    assert len(list(tmp_path.glob("*.npz"))) == 1
    clone.set_weights([w + 1 for w in clone.get_weights()])
    changed = measure.to_tflite(clone)
    assert changed != first and len(conversions) == 2
    np.testing.assert_allclose(measure.predict(changed, np.ones((1, 4), np.float32)),
                               clone(np.ones((1, 4), np.float32)).numpy(), atol=1e-5)
    renamed = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)),
                                keras.layers.Dense(3, name="other")])
    renamed.set_weights(clone.get_weights())
    assert measure.to_tflite(renamed) != changed and len(conversions) == 3


def test_keras_bytes_leave_out_the_optimizer(trained):
    """A trained, compiled model measures like its uncompiled copy (Adam's slots are not
    the model): the same weights must not be 3x larger fresh from training than cached."""
    copy = keras.models.clone_model(trained)
    copy.set_weights(trained.get_weights())
    assert trained.optimizer.variables()  # trained: Adam has its slots
    assert measure.keras_bytes(trained) == measure.keras_bytes(copy)
    # the zip's timestamps can move the gzip size by a byte or two; Adam's slots triple it
    assert measure.gzip_bytes(trained) == pytest.approx(measure.gzip_bytes(copy), rel=0.01)


def test_tflite_predictions_match_keras(trained, digits):
    flatbuffer = measure.to_tflite(trained)
    np.testing.assert_allclose(measure.predict(flatbuffer, digits.x_test[:50]),
                               measure.predict(trained, digits.x_test[:50]), atol=1e-4)
    keras_acc = measure.accuracy(trained, digits.x_test, digits.y_test)
    assert keras_acc > 0.8
    assert measure.accuracy(flatbuffer, digits.x_test, digits.y_test) == pytest.approx(
        keras_acc, abs=0.003)


def test_metrics_agree_with_sklearn(trained, digits):
    from sklearn.metrics import f1_score

    metrics = measure.classification_metrics(trained, digits.x_test, digits.y_test)
    predicted = np.argmax(trained.predict(digits.x_test, verbose=0), axis=-1)
    assert metrics["f1"] == pytest.approx(f1_score(digits.y_test, predicted, average="macro"))
    assert all(0 <= v <= 1 for v in metrics.values())


def test_latency_is_positive_and_validated(tiny):
    assert 0 < measure.latency_tflite_ms(measure.to_tflite(tiny), runs=20) < 50
    assert 0 < measure.latency_keras_ms(tiny, runs=20) < 500
    with pytest.raises(ValueError, match="runs must be an integer >= 1, got 0"):
        measure.latency_keras_ms(tiny, runs=0)


def test_bad_tflite_bytes_give_clear_error(digits):
    with pytest.raises(ValueError, match=r"model is not a TFLite flatbuffer: bytes 4-8 must be "
                                         r"b'TFL3', got b' is ' \(19 bytes\)"):
        measure.accuracy(b"this is not a model", digits.x_test[:2], digits.y_test[:2])
    with pytest.raises(ValueError, match=r"not a valid TFLite model \(16 bytes\)"):
        measure.tflite_interpreter(b"\x00\x00\x00\x00TFL3" + b"\xff" * 8)  # right id, no body


def test_load_tflite_from_bytes_or_path(tmp_path, tiny):
    flatbuffer = measure.to_tflite(tiny)
    assert measure.load_tflite(flatbuffer) == flatbuffer
    assert measure.load_tflite(bytearray(flatbuffer)) == flatbuffer
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffer)
    assert measure.load_tflite(path) == measure.load_tflite(str(path)) == flatbuffer
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a model at all")
    with pytest.raises(ValueError, match=r"notes.tflite is not a TFLite flatbuffer: bytes 4-8 "
                                         r"must be b'TFL3'"):
        measure.load_tflite(text)
    with pytest.raises(ValueError, match="got a path that does not exist: .*missing.tflite"):
        measure.load_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="student must be TFLite flatbuffer bytes or a .tflite "
                                         "path, got int"):
        measure.load_tflite(42, "student")


def test_evaluate_and_compare(trained, digits):
    report = measure.evaluate(trained, digits, name="mlp", runs=20)
    assert report.params == 1810 and report.nonzero > 1790 and report.sparsity < 0.01
    assert 0.8 < report.accuracy <= 1.0
    tflite_only = measure.evaluate(measure.to_tflite(trained), digits, name="tflite", runs=20)
    assert tflite_only.keras_bytes is None and tflite_only.accuracy == report.accuracy
    half = measure.Report(**{**report.__dict__, "name": "half",
                             "tflite_bytes": report.tflite_bytes // 2,
                             "accuracy": report.accuracy - 0.01})
    table = measure.compare([report, half])
    assert table.loc["mlp", "size ratio"] == 1.0
    assert table.loc["half", "size ratio"] == pytest.approx(2.0, abs=0.01)
    assert table.loc["half", "accuracy drop"] == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="at least one"):
        measure.compare([])


def test_per_class_metrics_agree_with_sklearn_and_average_to_the_macro_metrics(trained, digits):
    from sklearn.metrics import recall_score

    table = measure.per_class_metrics(trained, digits.x_test, digits.y_test)
    predicted = np.argmax(measure.predict(trained, digits.x_test), axis=-1)
    assert list(table.index) == sorted(set(digits.y_test) | set(predicted))
    assert table["support"].sum() == len(digits.y_test)
    np.testing.assert_allclose(table["recall"],
                               recall_score(digits.y_test, predicted, average=None,
                                            labels=table.index, zero_division=0))
    macro = measure.classification_metrics(trained, digits.x_test, digits.y_test)
    assert table["precision"].mean() == pytest.approx(macro["precision"])
    assert table["recall"].mean() == pytest.approx(macro["recall"])

import numpy as np
import pytest

from helpers import models


@pytest.mark.parametrize("name, params", [("lenet5", 61_706), ("lenet5_x4", 972_554),
                                          ("mlp", 19_090), ("tiny_cnn", 3_738),
                                          ("depthwise_cnn", 2_954)])
def test_known_parameter_counts(name, params):
    assert models.build(name).count_params() == params


def test_lenet5_width_multiplier():
    wide = models.lenet5(width=2)
    assert wide.name == "lenet5_x2"
    assert [layer.get_weights()[0].shape[-1] for layer in wide.layers if layer.get_weights()] \
        == [12, 32, 240, 168, 10]
    for width in (0, 1.5, True):
        with pytest.raises(ValueError, match="width must be an integer >= 1"):
            models.lenet5(width=width)


def test_every_model_builds_for_8x8_digits():
    for name in models.BUILDERS:
        model = models.build(name, (8, 8, 1))
        assert model.output_shape == (None, 10)


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="lenet5"):
        models.build("resnet")
    with pytest.raises(ValueError, match="input_shape"):
        models.build("mlp", (28, 28))
    with pytest.raises(ValueError, match="Unknown model"):
        models.pretrained("resnet")


def test_pretrained_trains_once_then_loads_from_cache(tmp_path, monkeypatch, digits):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    monkeypatch.setitem(models.RECIPES, "mlp", {"epochs": 2, "batch_size": 64,
                                                "learning_rate": 1e-2, "augment": False})
    first = models.pretrained("mlp", digits, progress=False)
    assert len(list(tmp_path.glob("mlp-digits-*.weights.h5"))) == 1
    accuracy = first.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    assert accuracy > 0.5  # two epochs on 8x8 digits already learn something

    monkeypatch.setattr(models, "train", lambda *a, **k: pytest.fail("retrained"))
    second = models.pretrained("mlp", digits, progress=False)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    second.layers[-1].set_weights([w * 0 for w in second.layers[-1].get_weights()])
    third = models.pretrained("mlp", digits, progress=False)  # the cache is untouched
    np.testing.assert_array_equal(third.get_weights()[-2], first.get_weights()[-2])


def test_corrupt_cache_file_is_retrained(tmp_path, monkeypatch, digits):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    monkeypatch.setitem(models.RECIPES, "mlp", {"epochs": 1, "batch_size": 64,
                                                "learning_rate": 1e-2, "augment": False})
    models.pretrained("mlp", digits, progress=False)
    (path,) = tmp_path.glob("mlp-digits-*.weights.h5")
    path.write_bytes(b"not an h5 file")
    with pytest.warns(UserWarning, match="retraining"):
        model = models.pretrained("mlp", digits, progress=False)
    assert model.evaluate(digits.x_test, digits.y_test, verbose=0)[1] > 0.3


def test_train_rejects_zero_epochs(digits):
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        models.train(models.compile_model(models.build("mlp", (8, 8, 1))), digits, epochs=0)


def test_recipes_converge_with_a_decaying_rate(digits):
    assert models.steps_per_epoch(digits, 64) == 23  # 1,437 training digits, batches of 64
    for name, recipe in models.RECIPES.items():
        assert recipe["schedule"] == "cosine", name  # no recipe ends at a constant rate
        model = models.compile_for_recipe(models.build(name, digits.input_shape), recipe, digits)
        schedule = model.optimizer.get_config()["learning_rate"]
        assert schedule["class_name"] == "CosineDecay", name
        assert schedule["config"]["decay_steps"] == recipe["epochs"] * 23, name
        assert schedule["config"]["initial_learning_rate"] == recipe["learning_rate"], name
    constant = models.compile_for_recipe(models.build("mlp", digits.input_shape),
                                         {"epochs": 30, "batch_size": 64,
                                          "learning_rate": 1e-3}, digits)
    assert constant.optimizer.get_config()["learning_rate"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        models.compile_for_recipe(models.build("mlp", digits.input_shape),
                                  {"epochs": 1, "batch_size": 64, "learning_rate": 1e-3,
                                   "schedule": "step"}, digits)


def _autotune(dataset):
    """What a pipeline's own options say about tf.data's autotuning: None when unset (then
    TensorFlow's default, on), else the value set."""
    from tensorflow.core.framework import dataset_options_pb2

    proto = dataset_options_pb2.Options.FromString(dataset._options().numpy())
    return proto.autotune_options.enabled if proto.autotune_options.WhichOneof(
        "optional_enabled") else None


def test_input_pipelines_run_without_autotuning():
    """helpers._tf turns tf.data's autotuning off in the pipelines Keras builds for arrays (a
    student's fit(x, y) included) and models.batches does it for the kit's own loops."""
    import tensorflow as tf
    from tf_keras.src.engine import data_adapter

    x, y = np.zeros((16, 4), np.float32), np.arange(16) % 2
    assert _autotune(tf.data.Dataset.from_tensor_slices((x, y))) is None  # the default: on
    keras_pipeline = data_adapter.TensorLikeDataAdapter(x, y, batch_size=8).get_dataset()
    assert _autotune(keras_pipeline) is False
    assert _autotune(models.batches(x, y, 4)) is False
    assert _autotune(models.augmented(np.zeros((16, 8, 8, 1)), y, 4)) is False
    first = [b.numpy().tolist() for _, b in models.batches(x, y, 4, seed=3)]
    assert first == [b.numpy().tolist() for _, b in models.batches(x, y, 4, seed=3)]
    assert sorted(sum(first, [])) == sorted(y.tolist())  # shuffled, nothing lost

"""helpers.early_exit: MAC counts, the threshold sweep, the two-stage split and counted reads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import early_exit, measure


@pytest.fixture(scope="module")
def net():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    return early_exit.early_exit_lenet()


@pytest.fixture(scope="module")
def stages(net, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stages")
    stage1, stage2 = early_exit.split_stages(net)
    (folder / "s1.tflite").write_bytes(stage1)
    (folder / "s2.tflite").write_bytes(stage2)
    return folder / "s1.tflite", folder / "s2.tflite"


def test_stage_macs_count_lenets_layers(net):
    macs = early_exit.stage_macs(net)
    assert macs["stage1"] == 28 * 28 * 6 * 25  # conv1: 'same' 5x5 over 1 channel
    assert macs["exit1"] == 14 * 14 * 6 * 10
    assert macs["stage2"] == 10 * 10 * 16 * 25 * 6 + 400 * 120 + 120 * 84 + 84 * 10
    assert macs["total"] == macs["stage1"] + macs["exit1"] + macs["stage2"]


def test_threshold_sweep_spends_what_the_rule_says():
    labels = np.array([0, 1, 2, 3])
    early = np.eye(4)[[0, 1, 3, 3]] * 0.6 + 0.1          # confident (0.7), last two: 3, 3
    early[1] = [0.4, 0.3, 0.2, 0.1]                      # unsure (0.4) and wrong early
    final = np.eye(4)[[0, 1, 2, 3]]
    macs = {"stage1": 10, "exit1": 2, "stage2": 100, "total": 112}
    sweep = early_exit.threshold_sweep(early, final, labels, macs, [0.0, 0.5, 1.0])
    assert list(sweep["exit %"]) == [100.0, 75.0, 0.0]
    assert list(sweep["accuracy %"]) == [50.0, 75.0, 100.0]  # early wrong on image 2
    assert list(sweep["MACs"]) == [12.0, 12.0 + 25.0, 112.0]
    with pytest.raises(ValueError, match="same inputs"):
        early_exit.threshold_sweep(early, final[:2], labels, macs, [0.5])
    with pytest.raises(ValueError, match=r"threshold must be in \[0.0, 1.0\]"):
        early_exit.threshold_sweep(early, final, labels, macs, [1.5])


def test_two_stages_compute_the_whole_network(net, stages):
    x = np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32)
    early, final = early_exit.exit_probabilities(net, x)
    staged = early_exit.StagedClassifier(*stages, threshold=1.0)  # every input goes on
    answers = [staged.predict(image) for image in x]
    assert [exit_used for _, exit_used in answers] == [2] * 6
    assert [label for label, _ in answers] == list(final.argmax(1))
    assert staged.stage2_file.reads == 1  # kept after the first load
    assert staged.bytes_read == stages[0].stat().st_size + stages[1].stat().st_size


def test_stage2_is_read_only_when_needed(net, stages):
    x = np.random.default_rng(1).random((5, 28, 28, 1), dtype=np.float32)
    confident = early_exit.StagedClassifier(*stages, threshold=0.0)
    early, _ = early_exit.exit_probabilities(net, x)
    assert [confident.predict(image) for image in x] == [(int(c), 1) for c in early.argmax(1)]
    assert confident.stage2_file.bytes_read == 0
    streaming = early_exit.StagedClassifier(*stages, threshold=1.0, keep_stage2=False)
    for image in x:
        streaming.predict(image)
    assert streaming.stage2_file.reads == 5
    assert streaming.stage2_file.bytes_read == 5 * stages[1].stat().st_size


def test_explorer_moves_and_bad_arguments(net):
    sweep = pd.DataFrame({"exit %": [90.0, 10.0], "accuracy %": [93.0, 98.0], "± SE": [0.8, 0.4],
                          "MACs": [1.0, 2.0], "MACs %": [35.0, 95.0]}, index=[0.5, 0.99])
    explorer = early_exit.threshold_explorer(sweep, 98.0)
    first = explorer.image.value
    explorer.slider.value = 0.99
    assert "10.0 % of inputs leave early" in explorer.text and explorer.image.value != first
    with pytest.raises(ValueError, match="threshold_sweep"):
        early_exit.threshold_explorer(pd.DataFrame({"a": [1]}), 98.0)
    with pytest.raises(ValueError, match="existing file"):
        early_exit.CountingFile("/nonexistent/stage.tflite")
    with pytest.raises(ValueError, match="model must be a Keras model"):
        early_exit.split_stages("stage.tflite")
    assert measure.count_params(net) == 61706 + 14 * 14 * 6 * 10 + 10

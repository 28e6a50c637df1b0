"""The quick benchmark produces every row with sane values (one run, shared by the tests)."""
import json

import numpy as np
import pytest

from helpers import cache
from helpers.course import benchmark

EXPECTED_ROWS = [
    "float32 Keras (.keras file)", "float32 TFLite", "dynamic-range (int8 weights)", "float16",
    "full int8 (PTQ)", "QAT int8", "dense, fine-tuned for the same extra budget",
    "pruned 50%", "pruned 50% + int8", "pruned 80%",
    "pruned 80% + int8", "pruned 90%", "pruned 90% + int8", "clustered 16",
    "clustered 16 + int8", "pruned + clustered + QAT int8",
    "Deep Compression (prune + share + Huffman)", "distilled student",
    "distilled student + int8", "low-rank factorized (90% energy)",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    assert benchmark.main(["--quick", "--format", "json", "--out", str(out)]) == 0
    return out, json.loads((out / "benchmark.json").read_text())


def test_every_row_is_there(quick):
    _, document = quick
    assert [r["technique"] for r in document["rows"]] == EXPECTED_ROWS
    baseline = document["baseline"]
    assert set(baseline) == {"model", "seeds", "accuracy_mean", "accuracy_std"}
    assert len(baseline["seeds"]) == 1 and baseline["accuracy_std"] == 0.0
    assert 90 < baseline["accuracy_mean"] <= 100  # percent


def test_values_are_sane_and_consistent(quick):
    _, document = quick
    rows = document["rows"]
    by_name = {r["technique"]: r for r in rows}
    base = by_name["float32 TFLite"]
    assert base["size ratio"] == 1.0 and base["accuracy drop"] == 0.0
    assert base["accuracy %"] == document["baseline"]["accuracy_mean"]
    for row in rows:
        assert row["accuracy % per seed"] == [row["accuracy %"]] and "drop std" not in row
        assert 0 < row["SE"] < 2, row  # points, on 1,000 test images
        within = row["accuracy drop"] <= row["SE"]
        assert row["verdict"].startswith("no measurable loss" if within else "loss of"), row
        assert 0 < row["accuracy %"] <= 100, row
        assert row["bytes"] > 0 and row["gzip bytes"] > 0 and row["latency ms"] > 0, row
        assert 0 < row["nonzero"] <= row["params"], row
        assert row["size ratio"] == pytest.approx(base["bytes"] / row["bytes"], abs=0.06)  # 1 decimal
        assert row["accuracy drop"] == pytest.approx(base["accuracy %"] - row["accuracy %"],
                                                     abs=0.02)
    assert by_name["full int8 (PTQ)"]["size ratio"] > 3
    assert by_name["float16"]["size ratio"] == pytest.approx(2, abs=0.15)
    # pruning shows in gzip size, not in the dense flatbuffer
    pruned, dense = by_name["pruned 90%"], by_name["float32 TFLite"]
    assert pruned["bytes"] == pytest.approx(dense["bytes"], rel=0.02)
    assert pruned["gzip bytes"] < 0.4 * dense["gzip bytes"]
    assert pruned["nonzero"] < 0.2 * pruned["params"]
    assert by_name["Deep Compression (prune + share + Huffman)"]["size ratio"] > 25
    assert by_name["distilled student"]["params"] * 10 <= base["params"]
    assert by_name["low-rank factorized (90% energy)"]["params"] < base["params"]


def test_files_are_written(quick):
    out, _ = quick
    assert (out / "pareto.png").stat().st_size > 10_000


def _seed_table(base_accuracy, small_accuracy, small_bytes=250):
    return benchmark.table([benchmark.Row("float32 TFLite", 10, 10, 1000, 900, base_accuracy, 0.1),
                            benchmark.Row("small", 10, 5, small_bytes, 200, small_accuracy, 0.05)])


def test_markdown_and_bad_format(tmp_path):
    frame = _seed_table(0.9, 0.89)
    assert frame.loc["small", "size ratio"] == 4.0
    assert frame.loc["small", "accuracy drop"] == pytest.approx(1.0)
    assert frame.loc["small", "speed-up"] == pytest.approx(2.0)
    summary = benchmark.summarize({0: frame}, test_size=1000)
    text = benchmark.markdown(summary)
    assert text.count("\n") == 4 and "| small |" in text and "loss of 1.00 points" in text
    with pytest.raises(ValueError, match="format must be one of"):
        benchmark.write(summary, tmp_path, "xlsx")


def test_several_seeds_are_paired(tmp_path):
    # baselines 98.0 / 99.0 / 97.0 %; each compressed model 0.2 / 0.4 / 0.0 points below its own
    summary = benchmark.summarize({0: _seed_table(0.980, 0.978), 1: _seed_table(0.990, 0.986),
                                   2: _seed_table(0.970, 0.970, small_bytes=260)}, 1000)
    small = summary.loc["small"]
    assert small["accuracy drop"] == pytest.approx(0.2)  # paired: not 98.0 - 97.8 of the means
    assert small["drop std"] == pytest.approx(0.2)
    assert small["accuracy %"] == pytest.approx(97.8)
    assert small["bytes"] == 253 and small["size ratio"] == pytest.approx((4 + 4 + 1000 / 260) / 3)
    assert small["SE"] == pytest.approx(100 * np.sqrt(0.978 * 0.022 / 1000))
    assert small["verdict"].startswith("no measurable loss (+0.20 points")
    seeds = [cache.seeded(s) for s in (0, 1, 2)]  # the seeds actually used ($EDGE_AI_SEED)
    assert summary.attrs["baseline"] == {"model": "lenet5", "seeds": seeds,
                                         "accuracy_mean": 98.0, "accuracy_std": 1.0}
    drops = benchmark.per_seed_drops(summary)
    assert drops.loc["small"].round(6).tolist() == [0.2, 0.4, 0.0, 0.2, 0.2]
    path, _ = benchmark.write(summary, tmp_path, "json")
    document = json.loads(path.read_text())
    assert document["baseline"]["accuracy_std"] == 1.0
    row = document["rows"][1]
    assert row["technique"] == "small" and row["accuracy drop"] == 0.2 and row["drop std"] == 0.2
    assert row["accuracy % per seed"] == [97.8, 98.6, 97.0]
    with pytest.raises(ValueError, match="other rows"):
        benchmark.summarize({0: _seed_table(0.9, 0.8), 1: _seed_table(0.9, 0.8).iloc[:1]}, 100)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        benchmark.run(seeds=[1, 1])


def test_timings_measure_the_slider(tmp_path):
    timing = benchmark.timings()
    assert {"sparsity slider, first visit (slowest move)",
            "sparsity slider, revisit (slowest move)"} <= set(timing.index)
    assert (timing["ms"] > 0).all() and timing["within target"].dtype == bool


def test_unknown_dataset_is_a_clear_cli_error(capsys):
    assert benchmark.main(["--dataset", "imagenet", "--quick"]) == 2
    assert "Unknown dataset 'imagenet'" in capsys.readouterr().err


def test_pareto_front_is_not_dominated():
    import pandas as pd

    from helpers import plots

    frame = pd.DataFrame({"bytes": [100, 50, 60, 10], "acc": [0.99, 0.98, 0.97, 0.5]},
                         index=list("abcd"))
    front = plots.pareto_front(frame, "bytes", "acc")
    assert list(front.index) == ["d", "b", "a"]
    assert np.all(np.diff(front["acc"]) > 0)

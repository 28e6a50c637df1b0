"""The quick benchmark produces every row with sane values (one run, shared by the tests)."""
import json

import numpy as np
import pytest

from helpers import benchmark

EXPECTED_ROWS = [
    "float32 Keras (.keras file)", "float32 TFLite", "dynamic-range (int8 weights)", "float16",
    "full int8 (PTQ)", "QAT int8", "pruned 50%", "pruned 50% + int8", "pruned 80%",
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
    _, rows = quick
    assert [r["technique"] for r in rows] == EXPECTED_ROWS


def test_values_are_sane_and_consistent(quick):
    _, rows = quick
    by_name = {r["technique"]: r for r in rows}
    base = by_name["float32 TFLite"]
    assert base["size ratio"] == 1.0 and base["accuracy drop"] == 0.0
    for row in rows:
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


def test_markdown_and_bad_format(tmp_path):
    frame = benchmark.table([benchmark.Row("float32 TFLite", 10, 10, 1000, 900, 0.9, 0.1),
                             benchmark.Row("small", 10, 5, 250, 200, 0.89, 0.05)])
    text = benchmark.markdown(frame)
    assert text.count("\n") == 4 and "| small |" in text
    assert frame.loc["small", "size ratio"] == 4.0
    assert frame.loc["small", "accuracy drop"] == pytest.approx(1.0)
    assert frame.loc["small", "speed-up"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="format must be one of"):
        benchmark.write(frame, tmp_path, "xlsx")


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

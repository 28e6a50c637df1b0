"""Every technique measured side by side in one run (taught in ``04_conclusion``).

    python -m helpers.benchmark [--dataset NAME] [--quick] [--format md|csv|json] [--out DIR]

One model family (LeNet-5 and a student distilled from it), one dataset, one table. Each row
is a model you could ship: its file is built in this run, its accuracy is measured on the test
split through LiteRT (the runtime a device would use) and its batch-1 latency is the median of
many LiteRT runs. ``--quick`` trims the fine-tuning budgets (every row is still produced,
with slightly lower accuracy) so the lecture can run it live.

The "Deep Compression" row is Han et al.'s pipeline (prune, share weights with k-means
codebooks, Huffman-code) encoded with :mod:`helpers.codec`; its size is the exact length of
the encoded blob, everything needed to decode included. On the device it is decoded once
into the dense model, so its latency is that of the decoded float model.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from helpers import clustering, codec, data as data_module, distillation, lowrank, measure
from helpers import models, plots, pruning, quantization
from helpers._tf import keras

FORMATS = ("md", "csv", "json")


@dataclass(frozen=True)
class Budget:
    """Training budgets of one benchmark run (epochs are passes over the training split)."""

    finetune_epochs: int  # pruning and clustering fine-tuning
    qat_epochs: int
    student_epochs: int
    lowrank_epochs: int
    pipeline_epochs: int  # fine-tuning of the combined (Deep Compression) pipeline
    latency_runs: int
    calibration_samples: int


FULL = Budget(finetune_epochs=6, qat_epochs=3, student_epochs=20, lowrank_epochs=4,
              pipeline_epochs=16, latency_runs=200, calibration_samples=300)
QUICK = Budget(finetune_epochs=1, qat_epochs=1, student_epochs=4, lowrank_epochs=1,
               pipeline_epochs=2, latency_runs=30, calibration_samples=100)

# The combined pipeline: prune the big dense layers hardest and spare the 150-weight conv1
# (uniform pruning hurts small layers), share weights with small k-means codebooks (3 bits for
# fc1, 4 bits elsewhere), and store biases and codebooks as float16. Found by a small sweep
# on mnist5k (recorded in the README): this point gave ~42x at about -0.7 accuracy points.
PIPELINE_SPARSITY = {"conv1": 0.0, "conv2": 0.5, "fc1": 0.95, "fc2": 0.85, "logits": 0.5}
PIPELINE_CLUSTERS = {"conv1": 16, "conv2": 16, "fc1": 8, "fc2": 16, "logits": 16}
PIPELINE_CODEC = {"raw_dtype": "float16", "codebook_dtype": "float16"}


@dataclass
class Row:
    """One benchmark row before ratios are added."""

    technique: str
    params: int
    nonzero: int
    bytes: int
    gzip_bytes: int
    accuracy: float
    latency_ms: float


def _row(technique: str, model: keras.Model, artifact: bytes, data, runs: int,
         accuracy: float | None = None, latency_from: bytes | None = None) -> Row:
    """Measure a shippable artifact (a TFLite flatbuffer unless stated) made from ``model``."""
    flatbuffer = latency_from if latency_from is not None else artifact
    if accuracy is None:
        accuracy = measure.accuracy(flatbuffer, data.x_test, data.y_test)
    return Row(technique, measure.count_params(model), measure.count_nonzero(model),
               len(artifact), len(gzip.compress(artifact, 9, mtime=0)), accuracy,
               measure.latency_tflite_ms(flatbuffer, runs))


def _keras_row(model: keras.Model, data, runs: int) -> Row:
    return Row("float32 Keras (.keras file)", measure.count_params(model),
               measure.count_nonzero(model), measure.keras_bytes(model),
               measure.gzip_bytes(model), measure.accuracy(model, data.x_test, data.y_test),
               measure.latency_keras_ms(model, runs))


def _steps(base: keras.Model, data, budget: Budget) -> list[tuple[str, Callable[[], list[Row]]]]:
    """The benchmark as named steps, each returning one or more rows."""
    runs, calibration = budget.latency_runs, data.x_train
    int8 = lambda m: quantization.quantize_int8(m, calibration, budget.calibration_samples)  # noqa: E731

    def float_rows():
        return [_keras_row(base, data, runs),
                _row("float32 TFLite", base, measure.to_tflite(base), data, runs)]

    def ptq_rows():
        return [_row("dynamic-range (int8 weights)", base,
                     quantization.quantize_dynamic_range(base), data, runs),
                _row("float16", base, quantization.quantize_float16(base), data, runs),
                _row("full int8 (PTQ)", base, int8(base), data, runs)]

    def qat_rows():
        trained = quantization.qat_tfmot(base, data, epochs=budget.qat_epochs)
        return [_row("QAT int8", base, quantization.quantize_dynamic_range(trained), data,
                     runs)]

    def pruned_rows():
        rows = []
        for target in (0.5, 0.8, 0.9):
            pruned = pruning.prune_and_fine_tune(base, data, target,
                                                 epochs=budget.finetune_epochs,
                                                 progress=False)
            rows.append(_row(f"pruned {target:.0%}", pruned, measure.to_tflite(pruned),
                             data, runs))
            rows.append(_row(f"pruned {target:.0%} + int8", pruned, int8(pruned), data, runs))
        return rows

    def clustered_rows():
        clustered = clustering.cluster_with_tfmot(base, 16, data=data,
                                                  epochs=budget.finetune_epochs)
        return [_row("clustered 16", clustered, measure.to_tflite(clustered), data, runs),
                _row("clustered 16 + int8", clustered, int8(clustered), data, runs)]

    def pipeline_rows():
        compressed_model = combined_pipeline(base, data, budget)
        qat = pcqat(compressed_model, data, epochs=budget.qat_epochs)
        deep = codec.deep_compress(compressed_model, **PIPELINE_CODEC)
        decoded = codec.decompress(deep, compressed_model)
        decoded_tflite = measure.to_tflite(decoded)
        return [_row("pruned + clustered + QAT int8", compressed_model,
                     quantization.quantize_dynamic_range(qat), data, runs),
                _row("Deep Compression (prune + share + Huffman)", compressed_model,
                     deep.blob, data, runs, latency_from=decoded_tflite)]

    def student_rows():
        student = distillation.train_student(base, data, "distilled",
                                             epochs=budget.student_epochs)
        return [_row("distilled student", student, measure.to_tflite(student), data, runs),
                _row("distilled student + int8", student, int8(student), data, runs)]

    def lowrank_rows():
        factored = lowrank.fine_tune(lowrank.factorize(base, energy=0.9), data,
                                     epochs=budget.lowrank_epochs)
        return [_row("low-rank factorized (90% energy)", factored,
                     measure.to_tflite(factored), data, runs)]

    return [("float32", float_rows), ("post-training quantization", ptq_rows),
            ("quantization-aware training", qat_rows), ("pruning", pruned_rows),
            ("clustering", clustered_rows), ("combined pipeline", pipeline_rows),
            ("distillation", student_rows), ("low-rank", lowrank_rows)]


def combined_pipeline(base: keras.Model, data, budget: Budget = FULL) -> keras.Model:
    """Prune (per-layer targets), fine-tune, share weights (k-means), fine-tune the centroids.

    Returns a plain Keras model whose kernels are sparse and hold at most
    ``PIPELINE_CLUSTERS[layer]`` distinct values each: ready for :func:`codec.deep_compress`.
    """
    pruned = pruning.prune_and_fine_tune(base, data, PIPELINE_SPARSITY,
                                         epochs=budget.pipeline_epochs, augment=True,
                                         progress=False)
    clustered = clustering.cluster_model(pruned, PIPELINE_CLUSTERS)
    models.train(clustered, data, epochs=max(1, budget.pipeline_epochs // 2), augment=True,
                 callbacks=[clustering.KeepClusters()], progress=False)
    return clustered


def pcqat(model: keras.Model, data, epochs: int = 2, learning_rate: float = 1e-4,
          seed: int = 0) -> keras.Model:
    """Prune- and cluster-preserving QAT (TFMOT's "PCQAT" collaborative optimization).

    Plain QAT would train the zeros and the shared values away; this scheme keeps the
    sparsity mask and the clusters while the weights learn the int8 rounding.
    """
    import tensorflow_model_optimization as tfmot

    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
        preserve_sparsity=True)
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    quantized = models.compile_model(tfmot.quantization.keras.quantize_apply(annotated, scheme),
                                     learning_rate)
    models.train(quantized, data, epochs=epochs, seed=seed, progress=False)
    return quantized


def run(dataset: str = data_module.DEFAULT_DATASET, quick: bool = False,
        progress: bool = True) -> pd.DataFrame:
    """Run every technique on one dataset and return the comparison table.

    Args:
        dataset: A name accepted by :func:`helpers.data.load_dataset`.
        quick: Small training budgets (about 2 minutes on 2 cores) instead of the full run.
        progress: Print one line per step to stderr.

    Returns:
        A DataFrame indexed by technique with params, non-zeros, bytes, gzip bytes, size
        ratio vs float32 TFLite, accuracy (%), accuracy drop (points), LiteRT latency (ms)
        and speed-up vs float32 TFLite.
    """
    data = data_module.load_dataset(dataset)
    budget = QUICK if quick else FULL
    base = models.pretrained("lenet5", data, progress=progress)
    rows: list[Row] = []
    started = time.perf_counter()
    steps = _steps(base, data, budget)
    for number, (label, step) in enumerate(steps, start=1):
        if progress:
            print(f"[{number}/{len(steps)}] {label} ... ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
        rows.extend(step())
    return table(rows)


def table(rows: list[Row]) -> pd.DataFrame:
    """Add the ratio columns against the float32 TFLite row."""
    frame = pd.DataFrame([r.__dict__ for r in rows]).set_index("technique")
    base = frame.loc["float32 TFLite"]
    frame["size ratio"] = base["bytes"] / frame["bytes"]
    frame["accuracy %"] = 100 * frame.pop("accuracy")
    frame["accuracy drop"] = 100 * base["accuracy"] - frame["accuracy %"]
    frame["latency ms"] = frame.pop("latency_ms")
    frame["speed-up"] = base["latency_ms"] / frame["latency ms"]
    return frame.rename(columns={"gzip_bytes": "gzip bytes"})


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style Markdown table of a DataFrame (index first)."""
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in frame.iterrows():
        cells = [f"{v:,}" if isinstance(v, (int, np.integer)) else f"{v:g}" for v in row]
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines) + "\n"


def write(frame: pd.DataFrame, out: Path, fmt: str = "md") -> list[Path]:
    """Write ``benchmark.<fmt>`` and ``pareto.png`` (accuracy vs bytes) into ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"benchmark.{fmt}"
    rounded = frame.round({"size ratio": 1, "accuracy %": 2, "accuracy drop": 2,
                           "latency ms": 4, "speed-up": 2})
    if fmt == "md":
        path.write_text(markdown(rounded))
    elif fmt == "csv":
        rounded.to_csv(path)
    else:
        path.write_text(json.dumps(rounded.reset_index().to_dict(orient="records"), indent=2))
    ax = plots.tradeoff(frame, "bytes", "accuracy %", title="Accuracy vs size (one run)",
                        logx=True, pareto=True, label_points="front")
    figure = out / "pareto.png"
    ax.figure.savefig(figure, dpi=120)
    return [path, figure]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.benchmark", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--dataset", default=data_module.DEFAULT_DATASET,
                        help=f"one of {', '.join(data_module.DATASETS)}")
    parser.add_argument("--quick", action="store_true", help="small budgets (~2 minutes)")
    parser.add_argument("--format", default="md", choices=FORMATS)
    parser.add_argument("--out", default="benchmark_out", type=Path)
    args = parser.parse_args(argv)
    try:
        frame = run(args.dataset, args.quick)
    except (ValueError, data_module.DatasetUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(frame.round(3))
    for path in write(frame, args.out, args.format):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

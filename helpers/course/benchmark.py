"""Every technique measured side by side, over seeds, with a fair control (``04_conclusion``).

    python -m helpers.course.benchmark [--dataset NAME] [--quick] [--seeds 0 1 2]
                                       [--timings] [--format md|csv|json] [--out DIR]

One model family (LeNet-5 and a student distilled from it), one dataset, one table. Each row
is a model you could ship: its file is built in this run, its accuracy is measured on the test
split through LiteRT (the runtime a device would use) and its batch-1 latency is the median of
many LiteRT runs. ``--quick`` trims the fine-tuning budgets (every row is still produced,
with slightly lower accuracy) so the lecture can run it live.

Comparisons are paired: with ``--seeds 0 1 2`` each seed's LeNet-5 is compressed and compared
with that same baseline, and a row reports the mean paired drop in points with its spread over
the seeds, beside the test set's standard error (a drop within it is "no measurable loss").
The row "dense, fine-tuned for the same extra budget" is the control: the uncompressed model
trained as long as the pruned ones were fine-tuned, so extra epochs are not credited to
compression. ``--timings`` adds the interactive targets (a slider answers within 0.2 s).

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
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import clustering, codec, data as data_module, distillation, lowrank, measure
from helpers import _validate, models, plots, pruning, quantization, widgets
from helpers._tf import keras
from helpers.cache import seeded

__all__ = ["FORMATS", "REFERENCE", "CONTROL", "Budget", "FULL", "QUICK", "Row", "run_seed",
           "run", "table", "summarize", "baselines", "timings", "TIMINGS", "markdown",
           "per_seed_drops", "write", "main"]

FORMATS = ("md", "csv", "json")
REFERENCE = "float32 TFLite"  # sizes, drops and speed-ups are relative to this row
CONTROL = "dense, fine-tuned for the same extra budget"


@dataclass(frozen=True)
class Budget:
    """Training budgets of one benchmark run (epochs are passes over the training split)."""

    finetune_epochs: int  # pruning and clustering fine-tuning
    qat_epochs: int
    student_epochs: int
    lowrank_epochs: int
    pipeline_epochs: int  # Deep Compression retraining (codec.deep_compression)
    latency_runs: int
    calibration_samples: int


FULL = Budget(finetune_epochs=6, qat_epochs=3, student_epochs=20, lowrank_epochs=4,
              pipeline_epochs=codec.EPOCHS, latency_runs=200, calibration_samples=300)
QUICK = Budget(finetune_epochs=1, qat_epochs=1, student_epochs=4, lowrank_epochs=1,
               pipeline_epochs=2, latency_runs=30, calibration_samples=100)

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


def _steps(base: keras.Model, data, budget: Budget,
           seed: int = 0) -> list[tuple[str, Callable[[], list[Row]]]]:
    """The benchmark of one baseline as named steps, each returning one or more rows."""
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

    def control_rows():  # the same fine-tuning recipe as the pruned rows, nothing pruned
        control = pruning.fine_tune_dense_control(base, data, epochs=budget.finetune_epochs,
                                                  seed=seed, progress=False)
        return [_row(CONTROL, control, measure.to_tflite(control), data, runs)]

    def pruned_rows():
        rows = []
        for target in (0.5, 0.8, 0.9):
            pruned = pruning.prune_and_fine_tune(base, data, target,
                                                 epochs=budget.finetune_epochs, seed=seed,
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
        deep = codec.deep_compression(base, data, epochs=budget.pipeline_epochs, seed=seed)
        compressed_model = deep.model
        qat = clustering.pcqat(compressed_model, data, epochs=budget.qat_epochs, seed=seed)
        decoded = codec.decompress(deep.blob, compressed_model)
        decoded_tflite = measure.to_tflite(decoded)
        return [_row("pruned + clustered + QAT int8", compressed_model,
                     quantization.quantize_dynamic_range(qat), data, runs),
                _row("Deep Compression (prune + share + Huffman)", compressed_model,
                     deep.blob, data, runs, latency_from=decoded_tflite)]

    def student_rows():
        student = distillation.train_student(base, data, "distilled")  # distillation.RECIPE
        return [_row("distilled student", student, measure.to_tflite(student), data, runs),
                _row("distilled student + int8", student, int8(student), data, runs)]

    def lowrank_rows():
        factored = lowrank.fine_tune(lowrank.factorize(base, energy=0.9), data,
                                     epochs=budget.lowrank_epochs)
        return [_row("low-rank factorized (90% energy)", factored,
                     measure.to_tflite(factored), data, runs)]

    return [("float32", float_rows), ("post-training quantization", ptq_rows),
            ("quantization-aware training", qat_rows), ("control", control_rows),
            ("pruning", pruned_rows),
            ("clustering", clustered_rows), ("combined pipeline", pipeline_rows),
            ("distillation", student_rows), ("low-rank", lowrank_rows)]


def run_seed(data, budget: Budget, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Every technique applied to the seed-``seed`` LeNet-5: one table (see :func:`table`)."""
    base = models.pretrained("lenet5", data, seed=seed, progress=progress)
    rows: list[Row] = []
    started = time.perf_counter()
    steps = _steps(base, data, budget, seed)
    for number, (label, step) in enumerate(steps, start=1):
        if progress:
            print(f"[seed {seed}, {number}/{len(steps)}] {label} ... "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        rows.extend(step())
    return table(rows)


def run(dataset: str = data_module.DEFAULT_DATASET, quick: bool = False,
        seeds: Sequence[int] = (0,), progress: bool = True) -> pd.DataFrame:
    """Run every technique on the LeNet-5 of each seed and summarize the paired drops.

    Args:
        dataset: A name accepted by :func:`helpers.data.load_dataset`.
        quick: Small training budgets (about 2 minutes per seed on 2 cores).
        seeds: Training seeds of the baselines (shifted by ``$EDGE_AI_SEED``); each seed's
            compressed models are compared with that seed's baseline.
        progress: Print one line per step to stderr.

    Returns:
        The summary of :func:`summarize`: one row per technique with params, non-zeros,
        bytes, gzip bytes, size ratio vs float32 TFLite, accuracy % (mean over seeds), the
        mean paired accuracy drop in points (and its spread over seeds when there are
        several), the test set's standard error, a verdict, LiteRT latency and speed-up.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, at least one, got {seeds}")
    data = data_module.load_dataset(dataset)
    budget = QUICK if quick else FULL
    return summarize({s: run_seed(data, budget, s, progress) for s in seeds}, len(data.y_test))


def table(rows: list[Row]) -> pd.DataFrame:
    """One seed's rows with the ratio columns against the float32 TFLite row."""
    frame = pd.DataFrame([r.__dict__ for r in rows]).set_index("technique")
    base = frame.loc[REFERENCE]
    frame["size ratio"] = base["bytes"] / frame["bytes"]
    frame["accuracy %"] = 100 * frame.pop("accuracy")
    frame["accuracy drop"] = 100 * base["accuracy"] - frame["accuracy %"]
    frame["latency ms"] = frame.pop("latency_ms")
    frame["speed-up"] = base["latency_ms"] / frame["latency ms"]
    return frame.rename(columns={"gzip_bytes": "gzip bytes"})


def summarize(per_seed: Mapping[int, pd.DataFrame], test_size: int) -> pd.DataFrame:
    """Combine the tables of several seeds: mean paired drops, spreads, standard errors.

    Args:
        per_seed: ``{seed: table(rows)}`` with the same techniques in each.
        test_size: Number of test examples (for the standard error of an accuracy).

    Returns:
        One row per technique. Counts, sizes, latency and speed-up are means over seeds;
        ``accuracy drop`` is the mean paired drop (baseline of seed s minus its compressed
        model), ``drop std`` its spread (only with several seeds), ``SE`` the test set's
        standard error in points at the row's accuracy, ``verdict`` the words of
        :func:`helpers.measure.describe_drop`. ``attrs["baseline"]`` holds the seeds and the
        float32 baseline's accuracy mean and std (percent); ``attrs["accuracy per seed"]``
        ``{technique: [accuracy % of each seed]}``.
    """
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    for seed, frame in per_seed.items():
        if list(frame.index) != list(first.index):
            raise ValueError(f"seed {seed} has other rows than seed {seeds[0]}")
    stacked = pd.concat(per_seed, names=["seed"])
    summary = stacked.groupby(level="technique", sort=False).mean()
    for column in ("params", "nonzero", "bytes", "gzip bytes"):
        summary[column] = summary[column].round().astype(int)
    accuracy = stacked["accuracy %"].unstack("seed").loc[first.index]
    drops = [measure.paired_drop(accuracy.loc[REFERENCE], accuracy.loc[name])
             for name in first.index]
    summary["accuracy drop"] = [d.mean for d in drops]
    if len(seeds) > 1:
        summary.insert(summary.columns.get_loc("accuracy drop") + 1, "drop std",
                       [d.std for d in drops])
    se = [100 * measure.standard_error(a / 100, test_size) for a in summary["accuracy %"]]
    summary.insert(summary.columns.get_loc("latency ms"), "SE", se)
    summary.insert(summary.columns.get_loc("latency ms"), "verdict",
                   [measure.describe_drop(d.mean, e) for d, e in zip(drops, se)])
    baseline = measure.spread(accuracy.loc[REFERENCE])
    summary.attrs["baseline"] = {"model": "lenet5", "seeds": [seeded(s) for s in seeds],
                                 "accuracy_mean": round(baseline.mean, 2),
                                 "accuracy_std": round(baseline.std, 2)}
    summary.attrs["accuracy per seed"] = {name: accuracy.loc[name].tolist()
                                          for name in first.index}
    return summary


def baselines(names: Sequence[str] = tuple(models.RECIPES), seeds: Sequence[int] = (0, 1, 2),
              dataset: str = data_module.DEFAULT_DATASET, progress: bool = True) -> pd.DataFrame:
    """Test accuracy (%) of each pretrained model for each seed, with mean and spread.

    Trains what the cache lacks (``models.pretrained``), so the first call is slow.
    """
    data = data_module.load_dataset(dataset)
    table = pd.DataFrame(
        [[100 * measure.accuracy(models.pretrained(name, data, seed=s, progress=progress),
                                 data.x_test, data.y_test) for s in seeds] for name in names],
        index=pd.Index(list(names), name="model"),
        columns=[f"seed {seeded(s)}" for s in seeds])
    spreads = [measure.spread(row) for _, row in table.iterrows()]
    table["mean"], table["std"] = [s.mean for s in spreads], [s.std for s in spreads]
    return table


# ---------------------------------------------------------------------------- timings
def _slider_timings() -> list[dict]:
    """The sparsity explorer's response on a made-up sweep (the shape of a real one)."""
    sparsities = [0.0, 0.5, 0.8, 0.9, 0.95]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        pruning.SPARSITY: sparsities, pruning.ACCURACY_ONE_SHOT: [0.98, 0.97, 0.77, 0.32, 0.10],
        pruning.ACCURACY_FINE_TUNED: [0.98, 0.98, 0.98, 0.977, 0.96],
        pruning.TFLITE_BYTES: [250_372] * 5, pruning.SPARSITY_MEASURED: sparsities,
        pruning.TFLITE_GZIP_BYTES: [230_575, 140_000, 70_000, 45_000, 30_000],
    }).set_index(pruning.SPARSITY)
    edges = np.linspace(-1, 1, 82)
    counts = np.array([np.histogram(rng.normal(0, 0.3, int(60_000 * (1 - s))), edges)[0]
                       for s in sparsities])
    sweep = pruning.SparsitySweep(frame, edges, counts[0], counts, 0.98)
    explorer = widgets.sparsity_explorer(sweep)

    def move(value) -> float:
        start = time.perf_counter()
        explorer.slider.value = value
        return 1000 * (time.perf_counter() - start)

    first = max(move(value) for value in sparsities[1:])  # each first visit renders
    again = max(move(value) for value in sparsities)  # revisits are look-ups
    return [{"what": "sparsity slider, first visit (slowest move)", "ms": first,
             "target ms": 200.0},
            {"what": "sparsity slider, revisit (slowest move)", "ms": again,
             "target ms": 50.0}]


TIMINGS: list[Callable[[], list[dict]]] = [_slider_timings]


def timings() -> pd.DataFrame:
    """Interactive response times against their targets (machine-dependent, not tested)."""
    frame = pd.DataFrame([row for measure_fn in TIMINGS for row in measure_fn()])
    frame["within target"] = frame["ms"] <= frame["target ms"]
    return frame.set_index("what")


# ---------------------------------------------------------------------------- output
def _cell(value) -> str:
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style Markdown table of a DataFrame (index first)."""
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in frame.iterrows():
        lines.append("| " + " | ".join([str(name)] + [_cell(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def per_seed_drops(summary: pd.DataFrame) -> pd.DataFrame:
    """Paired drop (points) of every row for each seed, then the mean and spread."""
    accuracy = pd.DataFrame(summary.attrs["accuracy per seed"]).T
    drops = accuracy.loc[REFERENCE] - accuracy
    drops.columns = [f"drop, seed {s}" for s in summary.attrs["baseline"]["seeds"]]
    drops["mean"] = summary["accuracy drop"]
    if "drop std" in summary:
        drops["std"] = summary["drop std"]
    return drops


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.round({"size ratio": 1, "accuracy %": 2, "accuracy drop": 2, "drop std": 2,
                        "SE": 2, "latency ms": 4, "speed-up": 2, "ms": 1})


def write(summary: pd.DataFrame, out: Path, fmt: str = "md",
          timing: pd.DataFrame | None = None) -> list[Path]:
    """Write ``benchmark.<fmt>`` and ``pareto.png`` (accuracy vs bytes) into ``out``.

    JSON holds ``{"baseline": {...}, "rows": [...]}`` (and ``"timings"`` when given): each
    row has ``technique``, ``size ratio``, ``accuracy drop`` (mean paired drop, points),
    ``drop std`` with several seeds, and ``accuracy % per seed``.
    """
    _validate.one_of(fmt, "format", FORMATS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"benchmark.{fmt}"
    rounded, baseline = _rounded(summary), summary.attrs["baseline"]
    if fmt == "md":
        text = (f"Baseline {baseline['model']} (float32 TFLite), seeds "
                f"{', '.join(map(str, baseline['seeds']))}: {baseline['accuracy_mean']:.2f} "
                f"+/- {baseline['accuracy_std']:.2f} % (mean +/- std)\n\n" + markdown(rounded)
                + "\nPaired drops per seed (points)\n\n"
                + markdown(per_seed_drops(summary).round(2)))
        if timing is not None:
            text += "\nTimings (this machine)\n\n" + markdown(_rounded(timing))
        path.write_text(text)
    elif fmt == "csv":
        rounded.to_csv(path)
    else:
        rows = rounded.reset_index().to_dict(orient="records")
        per_seed = summary.attrs["accuracy per seed"]
        for row in rows:
            row["accuracy % per seed"] = [round(a, 2) for a in per_seed[row["technique"]]]
        document = {"baseline": baseline, "rows": rows}
        if timing is not None:
            document["timings"] = _rounded(timing).reset_index().to_dict(orient="records")
        path.write_text(json.dumps(document, indent=2, default=_json_default))
    ax = plots.tradeoff(summary, "bytes", "accuracy %", logx=True, pareto=True,
                        label_points="front",
                        title=f"Accuracy vs size (mean of {len(baseline['seeds'])} seed(s))")
    figure = out / "pareto.png"
    ax.figure.savefig(figure, dpi=120)
    return [path, figure]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _write_baselines(args) -> int:
    names = args.baselines or list(models.RECIPES)
    unknown = [n for n in names if n not in models.RECIPES]
    if unknown:
        raise ValueError(f"Unknown model {unknown[0]!r}. "
                         f"Choose one of {', '.join(models.RECIPES)}.")
    table = baselines(names, args.seeds, args.dataset).round(2)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"baselines.{args.format}"
    if args.format == "md":
        path.write_text(markdown(table))
    elif args.format == "csv":
        table.to_csv(path)
    else:
        path.write_text(json.dumps(table.reset_index().to_dict(orient="records"), indent=2))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=data_module.DEFAULT_DATASET,
                        help=f"one of {', '.join(data_module.DATASETS)}")
    parser.add_argument("--quick", action="store_true", help="small budgets (~2 min a seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="baseline training seeds, compared pairwise (default: 0)")
    parser.add_argument("--timings", action="store_true",
                        help="also measure interactive response times against their targets")
    parser.add_argument("--baselines", nargs="*", metavar="MODEL",
                        help="only measure these pretrained models (default: all) over --seeds")
    parser.add_argument("--format", default="md", choices=FORMATS)
    parser.add_argument("--out", default="benchmark_out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.baselines is not None:
            return _write_baselines(args)
        summary = run(args.dataset, args.quick, args.seeds)
    except (ValueError, data_module.DatasetUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    timing = timings() if args.timings else None
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(_rounded(summary.drop(columns="verdict")))
        if timing is not None:
            print(_rounded(timing))
    for path in write(summary, args.out, args.format, timing):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Deep Compression settings sweep behind ``helpers.codec.RECIPE`` (its table is in the README).

    python tools/deep_compression_sweep.py [--seeds 0 1 2] [--only NAME ...]

For each setting and seed: the seed-s LeNet-5 baseline (``models.pretrained``), compressed with
``codec.deep_compression(..., seed=s)``; the size ratio is the float32 TFLite file of that
baseline over the exact blob length; accuracies are LiteRT runs on the 1,000 test images, the
compressed model rebuilt from the blob (``codec.decompress``). The drop is paired: each seed's
compressed model against the same seed's baseline. Every phase and measurement is cached, so a
second run only prints.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import helpers  # noqa: F401  (before TensorFlow)
from helpers import codec, measure, models
from helpers.cache import cache_key, cached_arrays, model_digest
from helpers.data import load_dataset

R = codec.RECIPE
HAN = {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.91, "logits": 0.8}
SETTINGS = {  # name: (recipe, epochs)
    "old pipeline settings, no teacher, 16 ep": (replace(R, alpha=1.0), 16),
    "old pipeline settings + teacher, 16 ep": (R, 16),
    "old pipeline settings + teacher, 32 ep": (R, 32),
    "old pipeline settings, no teacher, 32 ep": (replace(R, alpha=1.0), 32),
    "old pipeline settings + teacher, 48 ep": (R, 48),
    "old pipeline settings + teacher, 64 ep": (R, 64),
}


def measure_one(recipe, epochs: int, seed: int, data) -> dict:
    base = models.pretrained("lenet5", data, seed=seed, progress=False)

    def compute():
        reference = measure.to_tflite(base)
        result = codec.deep_compression(base, data, epochs=epochs, seed=seed, recipe=recipe)
        decoded = codec.decompress(result.blob, result.model)
        return {"bytes": result.size, "reference": len(reference),
                "baseline": measure.accuracy(reference, data.x_test, data.y_test),
                "compressed": measure.accuracy(measure.to_tflite(decoded), data.x_test,
                                               data.y_test)}

    key = f"deepcomp-sweep-{cache_key(repr(recipe), epochs, seed, model_digest(base))}"
    return {k: float(v) for k, v in cached_arrays(key, compute).items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    data = load_dataset("mnist5k")
    print("| setting | seed | bytes | size ratio | baseline % | compressed % | paired drop |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for name, (recipe, epochs) in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        rows = [measure_one(recipe, epochs, seed, data) for seed in args.seeds]
        for seed, row in zip(args.seeds, rows):
            print(f"| {name} | {seed} | {row['bytes']:.0f} | "
                  f"{row['reference'] / row['bytes']:.1f} | {100 * row['baseline']:.1f} | "
                  f"{100 * row['compressed']:.1f} | "
                  f"{100 * (row['baseline'] - row['compressed']):+.1f} |", flush=True)
        drop = measure.paired_drop([100 * r["baseline"] for r in rows],
                                   [100 * r["compressed"] for r in rows])
        ratio = min(r["reference"] / r["bytes"] for r in rows)
        summary.append(f"| {name} | {args.seeds} | {ratio:.1f} | {drop.mean:+.2f} "
                       f"+/- {drop.std:.2f} |")
    print("\n| setting | seeds | smallest size ratio | mean paired drop (points) +/- std |")
    print("|---|---|---|---|")
    print("\n".join(summary))


if __name__ == "__main__":
    main()

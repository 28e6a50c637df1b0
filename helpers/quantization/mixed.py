"""Mixed precision: a per-layer sensitivity scan, a bit-width plan, and hardware-aware training.

Taught in ``lessons/deeper/hardware_aware_training.ipynb``. Layers differ in how much
rounding they tolerate, so a device that supports several bit-widths (int8 and int4 weights,
say) should give each layer the fewest bits it tolerates:

* :func:`sensitivity_scan` quantizes one layer at a time (its kernel fake-quantized to each
  bit-width, the rest float) and measures the accuracy drop;
* :func:`mixed_precision_plan` picks, per layer, the fewest bits whose drop stays within a
  tolerance; :func:`fake_quantize_layers` applies a plan, :func:`packed_weight_bytes` counts
  the bytes its weights need on a device that packs ``b``-bit codes;
* :func:`qat_mixed` is hardware-aware training: quantization-aware fine-tuning (straight-through
  estimator) with each layer at the bit-width the plan gives it;
* :func:`quantize_with_aeq` writes a plan into a real TFLite file with ``ai-edge-quantizer``
  (int8 / int4 weights, per channel), the LiteRT quantizer;
* :func:`best_under_budget` and :func:`budget_explorer` choose among candidate models under a
  size or latency budget.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import _validate, measure
from helpers._tf import keras, tf
from helpers.cache import cache_key, cached_arrays, model_digest
from helpers.data import Dataset
from helpers.models import batches, compile_model, set_seed
from helpers.quantization.fake import _fake_quantize_kernel, quantizable_layers
from helpers.quantization.qat import _fake_quantize_tf
from helpers.quantization.scratch import MAX_BITS, MIN_BITS

__all__ = ["sensitivity_scan", "mixed_precision_plan", "fake_quantize_layers",
           "greedy_plan", "packed_weight_bytes", "qat_mixed", "AEQ_BITS", "tflite_layer_outputs", "quantize_with_aeq",
           "plot_sensitivity",
           "best_under_budget", "budget_explorer"]

AEQ_BITS = (4, 8)  # weight bit-widths ai-edge-quantizer writes that LiteRT 2.3 runs


def _bits_by_layer(model, bits: Mapping[str, int]) -> dict[str, int]:
    layers = quantizable_layers(model)
    unknown = sorted(set(bits) - set(layers))
    if unknown:
        raise ValueError(f"bits names layers the model has no kernel for: {unknown} "
                         f"(quantizable layers: {layers})")
    return {name: _validate.integer(b, f"bits[{name!r}]", MIN_BITS, MAX_BITS)
            for name, b in bits.items()}


def fake_quantize_layers(model: keras.Model, bits: Mapping[str, int],
                         per_channel: bool = True) -> keras.Model:
    """A copy of ``model`` with each named layer's kernel rounded to its bit-width.

    Args:
        model: A trained Keras model (not changed).
        bits: ``{layer name: bit-width}``; layers not named stay float32.
        per_channel: One symmetric scale per output channel (else one per tensor).

    Returns:
        A compiled copy (weights still stored as floats, on the ``b``-bit grid).
    """
    model = _validate.model(model, built=True)
    bits = _bits_by_layer(model, bits)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if layer.name in bits:
            layer.set_weights([_fake_quantize_kernel(layer, w, bits[layer.name], per_channel,
                                                     True) if w.ndim >= 2 else w
                               for w in layer.get_weights()])
    return compile_model(copy)


def sensitivity_scan(model: keras.Model, data: Dataset, bits: Sequence[int] = (8, 4, 2),
                     cache: bool = True) -> pd.DataFrame:
    """Quantize one layer at a time and measure the accuracy drop (points) on the test set.

    Returns:
        A table indexed by layer, one column per bit-width, of accuracy drops in points
        (float accuracy minus accuracy with only that layer quantized), plus ``weights``
        (the layer's kernel entries). ``table.attrs["float accuracy"]`` holds the baseline.
    """
    model, data = _validate.model(model, built=True), _validate.dataset(data)
    bits = [_validate.integer(b, "bits", MIN_BITS, MAX_BITS) for b in bits]
    layers = quantizable_layers(model)

    def compute():
        base = measure.accuracy(model, data.x_test, data.y_test)
        drops = [[100 * (base - measure.accuracy(fake_quantize_layers(model, {name: b}),
                                                 data.x_test, data.y_test)) for b in bits]
                 for name in layers]
        return {"drops": np.array(drops), "base": np.array(base)}

    key = f"sensitivity-{cache_key(model_digest(model), data.name, bits)}"
    arrays = cached_arrays(key, compute, cache)
    table = pd.DataFrame(arrays["drops"], index=pd.Index(layers, name="layer"),
                         columns=[f"{b}-bit drop" for b in bits])
    table["weights"] = [int(model.get_layer(n).get_weights()[0].size) for n in layers]
    table.attrs["float accuracy"] = float(arrays["base"])
    return table


def mixed_precision_plan(scan: pd.DataFrame, tolerance: float,
                         allowed: Sequence[int] | None = None) -> dict[str, int]:
    """Per layer, the fewest bits whose drop in ``scan`` is at most ``tolerance`` points.

    Args:
        scan: A :func:`sensitivity_scan` table.
        tolerance: Largest accepted drop per layer, in points (e.g. the standard error).
        allowed: Bit-widths the target supports (default: every one scanned); a layer that
            tolerates none of them gets the largest.
    """
    tolerance = _validate.number(tolerance, "tolerance", 0)
    scanned = {int(c.split("-")[0]): c for c in scan.columns if c.endswith("-bit drop")}
    allowed = sorted(scanned if allowed is None else allowed)
    missing = [b for b in allowed if b not in scanned]
    if missing:
        raise ValueError(f"allowed bit-widths {missing} were not scanned (scanned: "
                         f"{sorted(scanned)})")
    return {layer: next((b for b in allowed if row[scanned[b]] <= tolerance), max(allowed))
            for layer, row in scan.iterrows()}


def greedy_plan(model: keras.Model, scan: pd.DataFrame, budget_bytes: int,
                allowed: Sequence[int] | None = None) -> dict[str, int]:
    """The plan that fits ``budget_bytes``, lowering bits where accuracy is cheapest per byte.

    Starts with every layer at the largest allowed bit-width and, while the packed weights
    (:func:`packed_weight_bytes`) exceed the budget, moves one layer one step down: the one
    whose predicted extra drop (from the one-layer ``scan``) per byte saved is smallest.
    Drops are assumed to add up, which the notebook checks by measuring the result.

    Raises:
        ValueError: even the smallest bit-width everywhere does not fit the budget.
    """
    model = _validate.model(model, built=True)
    budget_bytes = _validate.positive_int(budget_bytes, "budget_bytes")
    scanned = {int(c.split("-")[0]): c for c in scan.columns if c.endswith("-bit drop")}
    steps = sorted(scanned if allowed is None else allowed, reverse=True)
    plan = {layer: steps[0] for layer in scan.index}
    while packed_weight_bytes(model, plan) > budget_bytes:
        options = []
        for layer, b in plan.items():
            if b == steps[-1]:
                continue
            lower = steps[steps.index(b) + 1]
            saved = packed_weight_bytes(model, plan) - packed_weight_bytes(
                model, {**plan, layer: lower})
            cost = scan.loc[layer, scanned[lower]] - scan.loc[layer, scanned[b]]
            options.append((cost / max(saved, 1), layer, lower))
        if not options:
            raise ValueError(f"budget_bytes {budget_bytes:,} is below the smallest plan "
                             f"({packed_weight_bytes(model, plan):,} bytes at "
                             f"{steps[-1]} bits everywhere)")
        _, layer, lower = min(options)
        plan[layer] = lower
    return plan


def packed_weight_bytes(model: keras.Model, bits: Mapping[str, int]) -> int:
    """Bytes of all weights when each planned kernel is packed at its bit-width.

    Kernels: ``ceil(entries * bits / 8)`` plus a 4-byte float scale per output channel;
    every other weight (biases, unplanned kernels) 4 bytes per entry.
    """
    model = _validate.model(model, built=True)
    bits = _bits_by_layer(model, bits)
    total = 0
    for layer in model.layers:
        for weight in layer.get_weights():
            if layer.name in bits and weight.ndim >= 2:
                total += -(-weight.size * bits[layer.name] // 8) + 4 * weight.shape[-1]
            else:
                total += 4 * weight.size
    return int(total)


def qat_mixed(model: keras.Model, data: Dataset, bits: Mapping[str, int], epochs: int = 2,
              learning_rate: float = 5e-4, batch_size: int = 64, seed: int = 0) -> keras.Model:
    """Hardware-aware training: fine-tune with each layer's kernel at its planned bit-width.

    The straight-through estimator of ``helpers.quantization.qat_ste``, per layer: each step
    rounds the float shadow kernels to their layer's bits (symmetric, per channel), computes
    the loss with the rounded kernels and applies the gradient to the shadows.

    Returns:
        A compiled copy whose planned kernels lie on their ``b``-bit grids.
    """
    model, data = _validate.model(model, built=True), _validate.dataset(data)
    bits = _bits_by_layer(model, bits)
    epochs = _validate.epochs(epochs)
    learning_rate = _validate.learning_rate(learning_rate)
    set_seed(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    plan = [(v, tf.Variable(v), bits.get(layer.name))
            for layer in copy.layers for v in layer.trainable_weights]
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def load_rounded():
        for variable, shadow, b in plan:
            rounded = b is not None and len(variable.shape) >= 2
            variable.assign(_fake_quantize_tf(shadow, b, True) if rounded else shadow)

    @tf.function
    def step(x, y):
        load_rounded()
        with tf.GradientTape() as tape:
            loss = loss_fn(y, copy(x, training=True))
        gradients = tape.gradient(loss, [v for v, _, _ in plan])
        optimizer.apply_gradients(zip(gradients, [s for _, s, _ in plan]))
        return loss

    pipeline = batches(data.x_train, data.y_train, batch_size, seed)
    for _ in range(epochs):
        for x, y in pipeline:
            step(x, y)
    load_rounded()
    return compile_model(copy)


def tflite_layer_outputs(flatbuffer: bytes) -> dict[str, str]:
    """``{Keras layer name: output tensor name}`` of each conv / dense op of a flatbuffer.

    ai-edge-quantizer's recipes match an op by its output tensor's name, which TFLite builds
    from the fused TensorFlow ops (and the last layer's is ``StatefulPartitionedCall:0``), so
    layers are found by their weight tensor's name instead.
    """
    flatbuffer = measure.load_tflite(flatbuffer, "flatbuffer")
    from helpers.graph import tflite_ops  # graph imports only measure: no cycle

    schema = measure.tflite_schema()
    tf_model = schema.Model.GetRootAs(flatbuffer, 0)
    graph = tf_model.Subgraphs(0)
    names = {}
    for i, row in tflite_ops(flatbuffer).iterrows():
        if row["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            weight = graph.Tensors(graph.Operators(i).Inputs(1)).Name().decode()
            found = re.search(r"([^/;]+)/(?:Conv2D|MatMul|depthwise)", weight)
            if found:
                names[found.group(1)] = row["output"]
    return names


def quantize_with_aeq(flatbuffer: bytes, bits: Mapping[str, int]) -> bytes:
    """Quantize a float TFLite model's weights with ``ai-edge-quantizer``, layer by layer.

    Each named layer's conv / dense weights are quantized weight-only (int8 or int4,
    symmetric, per channel; LiteRT dequantizes them before the float kernel runs); layers
    not named stay float32. Layers are matched to operators by the weight tensor's name
    (``lenet5/fc1/MatMul``), and each recipe entry names the op's output tensor exactly.

    Raises:
        ValueError: a bit-width outside :data:`AEQ_BITS`, or a layer with no matching op.
    """
    from ai_edge_quantizer import qtyping, quantizer

    flatbuffer = measure.load_tflite(flatbuffer, "flatbuffer")
    outputs = tflite_layer_outputs(flatbuffer)
    engine = quantizer.Quantizer(flatbuffer)
    for layer, b in bits.items():
        _validate.one_of(b, f"bits[{layer!r}]", AEQ_BITS)
        if layer not in outputs:
            raise ValueError(f"no conv or dense operator for layer {layer!r} in the flatbuffer "
                             f"(layers found: {sorted(outputs)})")
        engine.add_weight_only_config(regex=re.escape(outputs[layer]),
                                      operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                      num_bits=int(b))
    return bytes(engine.quantize(enable_progress_report=False).quantized_model)


def best_under_budget(candidates: pd.DataFrame, budget: float, column: str = "KB",
                      score: str = "accuracy %") -> str | None:
    """The name (index) of the best-scoring candidate whose ``column`` is within ``budget``."""
    for name in (column, score):
        if name not in candidates.columns:
            raise ValueError(f"candidates has no column {name!r} (columns: "
                             f"{list(candidates.columns)})")
    fits = candidates[candidates[column] <= budget]
    return None if fits.empty else str(fits[score].idxmax())


def budget_explorer(candidates: pd.DataFrame, budgets: Sequence[float], column: str = "KB",
                    score: str = "accuracy %", prerender: bool = False):
    """A budget slider over measured candidates: which model is the best that fits."""
    from helpers import plots, widgets

    budgets = [float(b) for b in budgets]
    choice = {b: best_under_budget(candidates, b, column, score) for b in budgets}

    def setup(figure):
        ax = figure.add_subplot(1, 1, 1)
        plots.new_axes(f"{score} against {column}", column, score, ax=ax)
        ax.scatter(candidates[column], candidates[score], color=plots.COLORS["baseline"])
        for name, row in candidates.iterrows():
            ax.annotate(str(name), (row[column], row[score]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xlim(0, max(budgets + [float(candidates[column].max())]) * 1.1)

    def draw(budget, best, figure):
        ax = figure.axes[0]
        ax.axvline(budget, color=plots.COLORS["accent"], lw=2)
        if best is None:
            return f"budget {budget:,.0f} {column}: <b>no candidate fits</b>"
        row = candidates.loc[best]
        ax.scatter([row[column]], [row[score]], s=160, facecolors="none",
                   edgecolors=plots.COLORS["edge"], linewidths=3)
        return (f"budget {budget:,.0f} {column}: best fit <b>{best}</b> "
                f"({row[column]:,.1f} {column}, {row[score]:.1f} {score.split()[-1]})")

    return widgets.sweep_explorer(choice, budgets, draw, setup, description=f"budget ({column})",
                                  format_value=lambda b: f"{b:,.0f}", prerender=prerender)


def plot_sensitivity(scan: pd.DataFrame, standard_error_points: float | None = None):
    """Grouped bars: the accuracy drop of each layer quantized alone, per bit-width."""
    from helpers import plots

    ax = plots.new_axes("Sensitivity: one layer quantized at a time", "layer",
                        "accuracy drop (points)", figsize=(7.0, 3.6))
    columns = [c for c in scan.columns if c.endswith("-bit drop")]
    width = 0.8 / len(columns)
    x = np.arange(len(scan))
    for i, column in enumerate(columns):
        ax.bar(x + (i - (len(columns) - 1) / 2) * width, scan[column], width,
               label=column.replace(" drop", ""))
    if standard_error_points is not None:
        ax.axhline(standard_error_points, color=plots.COLORS["accent"], ls="--",
                   label="1 standard error")
    ax.set_xticks(x, [f"{name}\n{n:,} w" for name, n in zip(scan.index, scan["weights"])])
    ax.set_yscale("symlog", linthresh=1.0)
    values = scan[columns].to_numpy()
    ax.set_ylim(min(-1.0, 2 * float(values.min())), 10 * max(1.0, float(values.max())))
    ax.legend(ncol=len(columns) + 1, fontsize=8, loc="upper left")
    return ax

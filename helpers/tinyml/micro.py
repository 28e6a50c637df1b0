"""Running a model on TensorFlow Lite Micro: the minimum tensor arena, predictions, and the
check that TFLM agrees with LiteRT."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from helpers import _validate
from helpers._tf import captured_output
from helpers.data import Dataset
from helpers.measure import load_tflite, predict_tflite
from helpers.tinyml.ops import ARENA_FLOOR, _tflm_error, _try_allocate, unsupported_ops

__all__ = ["ARENA_LIMIT", "tflm_interpreter", "arena_size", "arena_breakdown", "predict_tflm",
           "compare_runtimes", "MicroReport", "evaluate_micro"]

ARENA_LIMIT = 64 * 1024 * 1024  # bisection never tries an arena larger than this


def tflm_interpreter(flatbuffer: bytes, arena_bytes: int | None = None):
    """A ready TFLM interpreter (``tflite_micro`` Python runtime) for a model.

    Args:
        flatbuffer: The TFLite model.
        arena_bytes: Tensor arena size; default (and at least) :func:`arena_size` of the
            model. Smaller arenas are refused here, because TFLM's Python runtime can crash
            the whole process on some too-small arenas instead of raising an error.

    Raises:
        ValueError: not a flatbuffer, an operator TFLM lacks, or an arena too small.
    """
    flatbuffer = load_tflite(flatbuffer)
    minimum = arena_size(flatbuffer)
    arena_bytes = (minimum if arena_bytes is None
                   else _validate.integer(arena_bytes, "arena_bytes", 0))
    if arena_bytes < minimum:
        raise ValueError(f"arena_bytes={arena_bytes} is too small for this model: TFLM needs "
                         f"at least {minimum} bytes (arena_size())")
    interpreter, text = _try_allocate(flatbuffer, arena_bytes)
    if interpreter is None:  # not expected above the minimum; say what TFLM said
        raise ValueError(f"TFLM could not allocate the model in {arena_bytes} bytes: "
                         f"{text.splitlines()[-1] if text else 'no message'}")
    return interpreter


# Bisection runs in a child process: below the minimum, TFLM's Python runtime sometimes
# crashes (segmentation fault, e.g. a single dense layer at ~1,230 bytes) instead of raising
# "TFLM failed to allocate tensors". A crash there is a failed probe, and the search goes on.
_BISECT = """
import sys
from tflite_micro.python.tflite_micro import runtime
model = sys.stdin.buffer.read()
low, high = int(sys.argv[1]), int(sys.argv[2])
while high - low > 1:
    middle = (low + high) // 2
    print("try", middle, flush=True)
    try:
        runtime.Interpreter.from_bytes(model, arena_size=middle)
        high = middle
        print("ok", flush=True)
    except RuntimeError:
        low = middle
        print("fail", flush=True)
print("done", high, flush=True)
"""
_ARENA_CACHE: dict[tuple[bytes, int], int] = {}


def _bisect_arena(flatbuffer: bytes, low: int, high: int) -> int:
    """Smallest arena in (low, high] that allocates, ``low`` failing and ``high`` working."""
    for _ in range(64):  # each crash costs one restart; bisection needs ~26 probes
        run = subprocess.run([sys.executable, "-c", _BISECT, str(low), str(high)],
                             input=flatbuffer, capture_output=True, timeout=600)
        words, trying = run.stdout.decode().split(), None
        for word, value in zip(words, words[1:] + [""]):
            if word == "try":
                trying = int(value)
            elif word in ("ok", "fail"):
                low, high = (low, trying) if word == "ok" else (trying, high)
                trying = None
            elif word == "done":
                return int(value)
        if run.returncode >= 0 and trying is None:
            raise RuntimeError(f"the TFLM arena search failed: {run.stderr.decode()[-300:]}")
        if trying is not None:  # the child died while trying this size: too small
            low = trying
        if high - low <= 1:
            return high
    raise RuntimeError("the TFLM arena search crashed too often")


def arena_size(flatbuffer: bytes, limit: int = ARENA_LIMIT) -> int:
    """The smallest tensor arena (bytes) in which TFLM can allocate the model.

    TFLM plans every tensor into one static arena when the interpreter is built and fails
    ("TFLM failed to allocate tensors") if it is too small, so the minimum is found by
    bisection on the real runtime (in a child process, see ``_BISECT``; about half a second).
    Results are cached per model.

    Args:
        flatbuffer: The TFLite model.
        limit: Largest arena to try, in bytes (at least ``ARENA_FLOOR``).

    Returns:
        The minimum arena in bytes (what ``kTensorArenaSize`` must be at least, on this
        build; a device build differs by a few bytes of alignment).

    Raises:
        ValueError: not a flatbuffer, an operator TFLM lacks, or no arena up to ``limit``
            works.
    """
    flatbuffer = load_tflite(flatbuffer)
    limit = _validate.integer(limit, "limit", 0)
    if limit < ARENA_FLOOR:
        raise ValueError(f"limit must be >= {ARENA_FLOOR} bytes, got {limit}")
    key = (hashlib.sha256(flatbuffer).digest(), limit)
    if key not in _ARENA_CACHE:
        interpreter, text = _try_allocate(flatbuffer, limit)  # a big arena never crashes
        if interpreter is None:
            if "Failed to get registration" in text or "Didn't find op" in text:
                raise _tflm_error(flatbuffer, text)
            raise ValueError(f"TFLM could not allocate the model even with limit={limit} "
                             f"bytes: {text.splitlines()[-1] if text else 'no message'}")
        del interpreter
        # ARENA_FLOOR is taken as failing (TFLM's own objects need more; see ARENA_FLOOR)
        _ARENA_CACHE[key] = _bisect_arena(flatbuffer, ARENA_FLOOR, limit)
    return _ARENA_CACHE[key]


def arena_breakdown(flatbuffer: bytes, arena_bytes: int | None = None) -> dict[str, int]:
    """What the arena holds, from TFLM's recording allocator (``print_allocations``).

    Returns:
        ``{"total": ..., "activations": ..., "persistent": ...}`` in bytes: ``activations``
        is the arena head (tensors planned to share memory over time), ``persistent`` the
        tail (tensor and node structs, quantization parameters, kernel scratch data).
    """
    interpreter = tflm_interpreter(flatbuffer, arena_bytes)
    _, _, text = captured_output(interpreter.print_allocations)  # TFLM logs to stderr
    found = {key: re.search(rf"Arena allocation {key} (\d+) bytes", text)
             for key in ("total", "head", "tail")}
    if not all(found.values()):
        raise RuntimeError(f"unexpected print_allocations output: {text[:200]!r}")
    values = {key: int(match.group(1)) for key, match in found.items()}
    return {"total": values["total"], "activations": values["head"],
            "persistent": values["tail"]}


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    if dtype in (np.int8, np.uint8, np.int16):
        params = details["quantization_parameters"]
        scale, zero = float(params["scales"][0]), int(params["zero_points"][0])
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, details: dict) -> np.ndarray:
    if details["dtype"] in (np.int8, np.uint8, np.int16):
        params = details["quantization_parameters"]
        scale, zero = float(params["scales"][0]), int(params["zero_points"][0])
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def predict_tflm(flatbuffer: bytes, x: np.ndarray, arena_bytes: int | None = None,
                 raw: bool = False) -> np.ndarray:
    """Run a model through TensorFlow Lite Micro, one example at a time (batch 1).

    Float inputs are quantized with the model's input scale and zero point, and outputs are
    dequantized to float (as :func:`helpers.measure.predict_tflite` does for LiteRT).

    Args:
        flatbuffer: The TFLite model.
        x: A batch of inputs, shape ``(N,) + input shape``.
        arena_bytes: Tensor arena; default the minimum (:func:`arena_size`).
        raw: Return the raw output tensors (e.g. int8) instead of dequantized floats.

    Returns:
        Outputs, shape ``(N,) + output shape``.
    """
    interpreter = tflm_interpreter(flatbuffer, arena_bytes)
    inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    shape = tuple(int(s) for s in inp["shape"])
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or tuple(x.shape[1:]) != shape[1:] or len(x) == 0:
        raise ValueError(f"x must have shape (N,) + {shape[1:]} with N >= 1, got {x.shape}")
    results = []
    for example in x:
        interpreter.set_input(_quantize(example[None], inp), 0)
        interpreter.invoke()
        output = np.array(interpreter.get_output(0))[0]
        results.append(output if raw else _dequantize(output, out))
    return np.stack(results)


def compare_runtimes(flatbuffer: bytes, x: np.ndarray) -> dict[str, float]:
    """Run the same inputs through TFLM and LiteRT and measure how far they disagree.

    Returns:
        ``max_abs_diff`` (largest difference of the dequantized outputs), ``output_step``
        (the output's quantization step, 0 for float outputs: a difference of one step is a
        rounding difference between the two runtimes' kernels), ``max_diff_steps`` (the
        difference in steps; NaN for float outputs) and ``same_prediction`` (the
        fraction of inputs whose arg-max class agrees, in [0, 1]).
    """
    flatbuffer = load_tflite(flatbuffer)
    micro = predict_tflm(flatbuffer, x)
    lite = predict_tflite(flatbuffer, x)
    out = tflm_interpreter(flatbuffer).get_output_details(0)
    scales = out["quantization_parameters"]["scales"]
    step = float(scales[0]) if out["dtype"] != np.float32 and len(scales) else 0.0
    diff = float(np.max(np.abs(micro - lite)))
    return {"max_abs_diff": diff, "output_step": step,
            "max_diff_steps": round(diff / step, 3) if step else float("nan"),
            "same_prediction": float(np.mean(micro.argmax(-1) == lite.argmax(-1)))}


@dataclass
class MicroReport:
    """What a microcontroller deployment costs, measured: flash, arena and accuracy."""

    name: str
    flash_bytes: int
    arena_bytes: int
    accuracy: float
    unsupported: tuple[str, ...] = ()

    @property
    def flash_kb(self) -> float:
        return self.flash_bytes / 1024

    @property
    def arena_kb(self) -> float:
        return self.arena_bytes / 1024


def evaluate_micro(flatbuffer: bytes, data: Dataset, name: str = "model",
                   limit: int | None = None) -> MicroReport:
    """Flash bytes, minimum arena and test accuracy *through TFLM* of a model.

    Args:
        flatbuffer: The TFLite model.
        data: Its test split gives the accuracy.
        name: Row label.
        limit: Evaluate on the first ``limit`` test examples only (default: all).

    Raises:
        ValueError: not a flatbuffer, or an operator TFLM lacks (named in the message).
    """
    flatbuffer = load_tflite(flatbuffer)
    missing = unsupported_ops(flatbuffer)
    if missing:
        raise ValueError(f"TensorFlow Lite Micro has no kernel for {', '.join(missing)}: "
                         f"this model cannot run on a microcontroller as it is")
    arena = arena_size(flatbuffer)
    x, y = data.x_test[:limit], data.y_test[:limit]
    predicted = predict_tflm(flatbuffer, x, arena).argmax(-1)
    return MicroReport(name, len(flatbuffer), arena, float(np.mean(predicted == y)))

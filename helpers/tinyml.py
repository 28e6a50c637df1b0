"""TinyML deployment: from a TFLite flatbuffer to a microcontroller (``deeper/tinyml_deployment``).

A microcontroller stores the model in **flash** (read-only, next to the program) and keeps
every activation in one static block of **SRAM**, the *tensor arena*. TensorFlow Lite Micro
(TFLM) is the runtime: no operating system, no ``malloc``, and only the operators whose
kernels were compiled in. This module measures those three constraints for real:

* :func:`export_c` writes ``model_data.h`` / ``model_data.cc``: the flatbuffer as an aligned
  ``const unsigned char`` array (flash) ready for ``tflite::GetModel``;
* :func:`arena_size` finds the smallest tensor arena TFLM can allocate, by bisection on the
  real TFLM interpreter (``tflite-micro``'s Python runtime), and :func:`arena_breakdown`
  splits it into activations and bookkeeping;
* :func:`predict_tflm` runs a model through TFLM and :func:`compare_runtimes` checks that it
  agrees with LiteRT (the phone/desktop runtime);
* :func:`check_ops` lists the model's operators and asks the installed TFLM, op by op,
  whether it has a kernel for each (see :func:`tflm_has_kernel`);
* :func:`fit_table` says which boards of ``helpers.data.edge_boards()`` the model fits, and by
  what margin, after stated allowances for the runtime and the application.

Command line::

    python -m helpers.tinyml MODEL.tflite [--out DIR] [--board NAME]

Used by ``lessons/deeper/tinyml_deployment.ipynb`` and ``solutions/lab4_tinyml.ipynb``.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers._tf import captured_output, keras

from helpers import data as _data
from helpers.measure import TFLITE_FILE_ID, load_tflite, predict_tflite, tflite_schema

# Stated allowances (assumptions, not measurements): what the program needs next to the model.
# Flash: the TFLM core runtime "fits in 16 KB on an Arm Cortex M3" and with the kernels of the
# micro_speech model about 22 KB (tensorflow.org/lite/microcontrollers overview); real builds are
# larger (tensorflow/tflite-micro issue #3069), so we add room for more kernels, start-up code,
# drivers and the application itself.
FLASH_ALLOWANCE_KB = 64.0
# SRAM: stack, the interpreter and op-resolver objects, input/output buffers, drivers, app state.
SRAM_ALLOWANCE_KB = 16.0
# TFLM needs a 32-bit CPU ("TensorFlow Lite for Microcontrollers ... requires a 32-bit
# platform", tensorflow.org/lite/microcontrollers); the core column of edge_boards() says which.
_NOT_32_BIT = re.compile(r"\b(8|16)-bit\b", re.IGNORECASE)

ARENA_LIMIT = 64 * 1024 * 1024  # bisection never tries an arena larger than this
# TFLM's Python runtime crashes (segmentation fault) instead of raising when the arena cannot
# even hold the allocator's own objects (measured: at 460 bytes and below, for any model), so we
# never hand it less than this; every model needs more anyway (a single int8 dense layer: ~1 KB).
ARENA_FLOOR = 512
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------- input checks
def _check_kb(name: str, value) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a number of KB >= 0, got {value!r}")
    return float(value)


def _check_bytes(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number of bytes >= 0, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------- conversion
def to_int8_tflite(model: keras.Model, representative: np.ndarray,
                   samples: int | None = None) -> bytes:
    """Full-integer (int8) TFLite conversion, int8 input and output: what TFLM runs best.

    A thin wrapper over :func:`helpers.quantization.quantize_int8` (taught in lesson 02) with
    the defaults a microcontroller needs: per-channel int8 weights, int8 activations, int8
    input and output, calibrated on ``min(200, N)`` examples unless told otherwise.

    Args:
        model: A trained float Keras model.
        representative: Calibration inputs, shape ``(N,) + model.input_shape[1:]``
            (training images, never test images).
        samples: How many of them to use, in ``[1, N]``; default ``min(200, N)``.

    Returns:
        The int8 flatbuffer.

    Raises:
        ValueError: ``representative`` is empty or has the wrong shape, ``samples`` is out
            of range, or the model cannot be converted to integer-only operators.
    """
    from helpers.quantization import quantize_int8

    count = len(representative) if np.ndim(representative) else 0
    samples = min(200, max(count, 1)) if samples is None else samples
    return quantize_int8(model, representative, num_samples=samples, per_channel=True,
                         int8_io=True)


def activation_table(model: keras.Model, bytes_per_value: int = 1) -> pd.DataFrame:
    """Each layer's output size, and the memory a layer needs while it runs (input + output).

    A sequential model's peak arena need is roughly the largest ``input + output`` of one
    layer: both must be live at once, everything else can reuse memory. That is why the
    first layers (big feature maps) decide the arena, and the dense layers the flash.

    Args:
        model: A Keras model with one input (e.g. ``keras.Sequential``).
        bytes_per_value: 1 for int8 activations, 4 for float32.

    Returns:
        One row per layer: ``output shape``, ``output bytes``, ``in+out bytes``, ``weights``.
    """
    if not isinstance(model, keras.Sequential):
        raise ValueError(f"model must be a keras.Sequential (one chain of layers), got "
                         f"{type(model).__name__}")
    if bytes_per_value not in (1, 2, 4):
        raise ValueError(f"bytes_per_value must be 1, 2 or 4, got {bytes_per_value!r}")
    size = int(np.prod(model.input_shape[1:])) * bytes_per_value
    rows = []
    for layer in model.layers:
        shape = tuple(layer.output_shape[1:])
        out = int(np.prod(shape)) * bytes_per_value
        rows.append({"layer": layer.name, "output shape": shape, "output bytes": out,
                     "in+out bytes": size + out, "weights": layer.count_params()})
        size = out
    return pd.DataFrame(rows).set_index("layer")


# ---------------------------------------------------------------------------- C source
def c_source(flatbuffer: bytes, name: str = "model_data", alignment: int = 16,
             arena_bytes: int | None = None) -> tuple[str, str]:
    """The text of ``<name>.h`` and ``<name>.cc`` holding the flatbuffer as a C array.

    The array is ``alignas(alignment) const unsigned char <name>[]`` (const, so the linker
    keeps it in flash; aligned, because TFLM reads the flatbuffer in place) and
    ``const unsigned int <name>_len`` is its length, like ``xxd -i`` gives but aligned.

    Args:
        flatbuffer: The TFLite model.
        name: C identifier of the array; also the file stem.
        alignment: Byte alignment of the array, a power of two in ``[4, 4096]`` (TFLM's
            examples use 16).
        arena_bytes: If given, the measured minimum arena, written to the header as
            ``<NAME>_ARENA_BYTES`` so the application can size its tensor arena.

    Returns:
        ``(header_text, source_text)``.

    Raises:
        ValueError: not a flatbuffer, ``name`` is not a C identifier, or ``alignment`` /
            ``arena_bytes`` out of range.
    """
    flatbuffer = load_tflite(flatbuffer)
    if not isinstance(name, str) or not _C_IDENTIFIER.match(name):
        raise ValueError(f"name must be a C identifier (letters, digits, _; not starting "
                         f"with a digit), got {name!r}")
    if isinstance(alignment, bool) or not isinstance(alignment, int) or \
            not 4 <= alignment <= 4096 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two in [4, 4096], got {alignment!r}")
    if arena_bytes is not None:
        _check_bytes("arena_bytes", arena_bytes)
    guard = f"{name.upper()}_H_"
    arena = (f"\n// Minimum tensor arena measured with the TFLM Python runtime; round up and add\n"
             f"// a little headroom on the device.\n#define {name.upper()}_ARENA_BYTES "
             f"{int(arena_bytes)}\n" if arena_bytes is not None else "")
    header = (
        f"// Generated by helpers.tinyml: a TFLite model of {len(flatbuffer)} bytes for\n"
        f"// TensorFlow Lite Micro. Use: const tflite::Model* model = tflite::GetModel({name});\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {name}[];\n"
        f"extern const unsigned int {name}_len;\n{arena}\n#endif  // {guard}\n")
    rows = [", ".join(f"0x{byte:02x}" for byte in flatbuffer[i:i + 12])
            for i in range(0, len(flatbuffer), 12)]
    source = (
        f"// Generated by helpers.tinyml; do not edit. {len(flatbuffer)} bytes.\n"
        f'#include "{name}.h"\n\n'
        f"// const: stays in flash. alignas({alignment}): TFLM reads the flatbuffer in place.\n"
        f"alignas({alignment}) const unsigned char {name}[] = {{\n    "
        + ",\n    ".join(rows) + f"\n}};\n"
        f"const unsigned int {name}_len = {len(flatbuffer)};\n")
    return header, source


def export_c(flatbuffer: bytes, out_dir: str | Path, name: str = "model_data",
             alignment: int = 16, arena_bytes: int | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.h`` and ``<out_dir>/<name>.cc`` (see :func:`c_source`).

    Args:
        flatbuffer: The TFLite model.
        out_dir: Directory to write to (created if needed).
        name, alignment, arena_bytes: As for :func:`c_source`.

    Returns:
        The paths of the header and the source file.

    Raises:
        ValueError: as :func:`c_source`.
    """
    header, source = c_source(flatbuffer, name, alignment, arena_bytes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header_path, source_path = out / f"{name}.h", out / f"{name}.cc"
    header_path.write_text(header)
    source_path.write_text(source)
    return header_path, source_path


# ---------------------------------------------------------------------------- TFLM plumbing
def _builtin_names() -> dict[int, str]:
    builtin = tflite_schema().BuiltinOperator
    return {value: key for key, value in vars(builtin).items() if not key.startswith("_")}


def _tflm_runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _try_allocate(flatbuffer: bytes, arena: int):
    """(interpreter or None, TFLM's error text) for one arena size."""
    if arena < ARENA_FLOOR:  # would crash the process, see ARENA_FLOOR
        raise ValueError(f"arena_bytes must be >= {ARENA_FLOOR}, got {arena}")
    runtime = _tflm_runtime()
    interpreter, error, text = captured_output(
        lambda: runtime.Interpreter.from_bytes(flatbuffer, arena_size=int(arena)))
    if error is not None and not isinstance(error, RuntimeError):
        raise ValueError(f"TFLM cannot read this model: {type(error).__name__}: {error}")
    return interpreter, text.strip()


# ---------------------------------------------------------------------------- operators
@dataclass(frozen=True)
class Operator:
    """One operator of a model: its name (``CONV_2D``, or a custom op's name) and kind."""

    name: str
    custom: bool = False


def model_ops(flatbuffer: bytes) -> list[Operator]:
    """The operators of a TFLite model in execution order (main subgraph first), read from
    the flatbuffer itself with TFLM's copy of the TFLite schema.

    Raises:
        ValueError: not a TFLite flatbuffer.
    """
    flatbuffer = load_tflite(flatbuffer)
    schema, names = tflite_schema(), _builtin_names()
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append(Operator((code.CustomCode() or b"").decode(), custom=True))
        else:
            codes.append(Operator(names.get(builtin, f"BUILTIN_{builtin}")))
    ops = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        ops += [codes[subgraph.Operators(i).OpcodeIndex()]
                for i in range(subgraph.OperatorsLength())]
    return ops


def _probe_model(op: Operator) -> bytes:
    """A two-operator model: ``op``, then an operator with an out-of-range builtin code.

    TFLM looks up every operator's kernel before it prepares any, so on this model it either
    fails on ``op`` (no kernel) or gets past it and fails on the second operator with
    "Op builtin_code out of range" -- which proves it found ``op``'s kernel. Nothing runs.
    """
    import flatbuffers

    schema = tflite_schema()
    names = {name: code for code, name in _builtin_names().items()}
    first = schema.OperatorCodeT()
    if op.custom:
        first.builtinCode = first.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        first.customCode = op.name
    else:
        first.builtinCode = names[op.name]
        first.deprecatedBuiltinCode = min(names[op.name], 127)
    stop = schema.OperatorCodeT()
    stop.builtinCode, stop.deprecatedBuiltinCode = _PROBE_STOP_CODE, 127
    tensors = []
    for i in range(2):
        tensor = schema.TensorT()
        tensor.shape, tensor.type, tensor.buffer, tensor.name = [1], 0, 0, f"t{i}"
        tensors.append(tensor)
    operators = []
    for index in range(2):
        operator = schema.OperatorT()
        operator.opcodeIndex, operator.inputs, operator.outputs = index, [index], [1]
        operators.append(operator)
    if op.name == "VAR_HANDLE" and not op.custom:  # the runtime reads its shared name first
        operators[0].builtinOptionsType = schema.BuiltinOptions.VarHandleOptions
        operators[0].builtinOptions = schema.VarHandleOptionsT(sharedName="probe")
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs = tensors, [0], [1]
    subgraph.operators = operators
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [first, stop], [subgraph]
    model.buffers = [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_ID)
    return bytes(builder.Output())


_PROBE_STOP_CODE = 9999
_KERNEL_CACHE: dict[Operator, bool] = {}


def tflm_has_kernel(op: str | Operator) -> bool:
    """Whether the installed TFLM runtime has a kernel for an operator, asked of TFLM itself.

    This is a probe, not a list copied from documentation: a tiny two-operator model (see
    ``_probe_model``) is loaded into ``tflite_micro``'s interpreter, whose op resolver holds
    every kernel of the installed TFLM build. A kernel may still reject some data types
    (e.g. int16), which only loading the real model shows (see :func:`check_ops`).

    Args:
        op: A builtin operator name such as ``"CONV_2D"`` or ``"GELU"``, or an
            :class:`Operator` (custom operators are looked up by their custom name).

    Raises:
        ValueError: ``op`` is not a TFLite builtin operator name.
    """
    if isinstance(op, str):
        known = set(_builtin_names().values())
        if op not in known:
            raise ValueError(f"op must be a TFLite builtin operator name such as 'CONV_2D', "
                             f"got {op!r}")
        op = Operator(op)
    if not op.custom and op.name not in set(_builtin_names().values()):
        return False  # a builtin code newer than TFLM's schema: no kernel for it
    if op not in _KERNEL_CACHE:
        _, text = _try_allocate(_probe_model(op), 4096)
        _KERNEL_CACHE[op] = f"out of range: {_PROBE_STOP_CODE}" in text
    return _KERNEL_CACHE[op]


def builtin_ops() -> list[str]:
    """Names of every TFLite builtin operator in the schema (the converter's vocabulary)."""
    return [name for _, name in sorted(_builtin_names().items())
            if name not in ("CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES")]


def tflm_kernels() -> list[str]:
    """Names of every TFLite builtin operator the installed TFLM has a kernel for (probed)."""
    return [name for name in builtin_ops() if tflm_has_kernel(name)]


def check_ops(flatbuffer: bytes) -> pd.DataFrame:
    """The model's operators, how often each occurs, and whether TFLM has a kernel for it.

    Returns:
        A DataFrame indexed by operator name with columns ``count``, ``custom`` and ``tflm``
        (True when the installed TFLM has a kernel, see :func:`tflm_has_kernel`), in order
        of first use.
    """
    ops = model_ops(flatbuffer)
    rows = {}
    for op in ops:
        row = rows.setdefault(op.name, {"count": 0, "custom": op.custom,
                                        "tflm": tflm_has_kernel(op)})
        row["count"] += 1
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "operator"
    return table


def unsupported_ops(flatbuffer: bytes) -> list[str]:
    """Names of the model's operators that the installed TFLM has no kernel for."""
    table = check_ops(flatbuffer)
    return list(table.index[~table["tflm"]])


def _tflm_error(flatbuffer: bytes, text: str) -> ValueError:
    missing = unsupported_ops(flatbuffer)
    if missing:
        return ValueError(f"TensorFlow Lite Micro has no kernel for {', '.join(missing)} "
                          f"(ops of this model); replace the layers that produce them (e.g. "
                          f"another activation) and convert again")
    return ValueError(f"TensorFlow Lite Micro cannot prepare this model: "
                      f"{text.splitlines()[-1] if text else 'no message'}")


# ---------------------------------------------------------------------------- arena and runs
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
    arena_bytes = minimum if arena_bytes is None else _check_bytes("arena_bytes", arena_bytes)
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
    limit = _check_bytes("limit", limit)
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


# ---------------------------------------------------------------------------- reports
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


def evaluate_micro(flatbuffer: bytes, data: _data.Dataset, name: str = "model",
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


def fit_table(flash_bytes: int, arena_bytes: int, boards: pd.DataFrame | None = None,
              flash_allowance_kb: float = FLASH_ALLOWANCE_KB,
              sram_allowance_kb: float = SRAM_ALLOWANCE_KB) -> pd.DataFrame:
    """Which boards a model fits, and by what margin.

    A board fits when (1) its CPU is 32-bit (TFLM's requirement), (2) model bytes plus the
    flash allowance fit in its flash, and (3) the tensor arena plus the SRAM allowance fit in
    its SRAM. The allowances are stated assumptions (see ``FLASH_ALLOWANCE_KB`` and
    ``SRAM_ALLOWANCE_KB``), so change them to match your application.

    Args:
        flash_bytes: The model's flatbuffer size in bytes.
        arena_bytes: Its tensor arena in bytes (:func:`arena_size`).
        boards: Board table with columns ``board, core, flash_kb, sram_kb``; default
            :func:`helpers.data.edge_boards`.
        flash_allowance_kb: Flash kept for the runtime and the application, KB.
        sram_allowance_kb: SRAM kept for the stack, runtime objects and the application, KB.

    Returns:
        One row per board: ``flash need KB``, ``flash margin KB``, ``SRAM need KB``,
        ``SRAM margin KB`` (negative: short by that much), ``fits`` and ``why not``.
    """
    flash_bytes = _check_bytes("flash_bytes", flash_bytes)
    arena_bytes = _check_bytes("arena_bytes", arena_bytes)
    flash_allowance_kb = _check_kb("flash_allowance_kb", flash_allowance_kb)
    sram_allowance_kb = _check_kb("sram_allowance_kb", sram_allowance_kb)
    boards = _data.edge_boards() if boards is None else boards
    missing = {"board", "core", "flash_kb", "sram_kb"} - set(boards.columns)
    if missing:
        raise ValueError(f"boards must have columns board, core, flash_kb, sram_kb; "
                         f"missing {sorted(missing)}")
    flash_need = flash_bytes / 1024 + flash_allowance_kb
    sram_need = arena_bytes / 1024 + sram_allowance_kb
    rows = []
    for _, board in boards.iterrows():
        flash_margin, sram_margin = board.flash_kb - flash_need, board.sram_kb - sram_need
        reasons = []
        if _NOT_32_BIT.search(str(board.core)):
            reasons.append("TFLM needs a 32-bit CPU")
        if flash_margin < 0:
            reasons.append(f"flash short by {-flash_margin:,.1f} KB")
        if sram_margin < 0:
            reasons.append(f"SRAM short by {-sram_margin:,.1f} KB")
        rows.append({"board": board.board, "core": board.core, "flash KB": board.flash_kb,
                     "flash need KB": round(flash_need, 1),
                     "flash margin KB": round(flash_margin, 1), "SRAM KB": board.sram_kb,
                     "SRAM need KB": round(sram_need, 1), "SRAM margin KB": round(sram_margin, 1),
                     "fits": not reasons, "why not": "; ".join(reasons)})
    return pd.DataFrame(rows).set_index("board")


def _find_board(table: pd.DataFrame, name: str) -> str:
    matches = [board for board in table.index if name.lower() in board.lower()]
    if len(matches) != 1:
        raise ValueError(f"board must name one of {list(table.index)}, got {name!r} "
                         f"({len(matches)} matches)")
    return matches[0]


# ---------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tinyml MODEL.tflite [--out DIR] [--board NAME]``.

    Writes the C files, prints flash and arena bytes, the operator check and the fit table.
    Exit codes: 0 the model can run on TFLM (and fits ``--board`` if given), 1 it cannot
    (an operator TFLM lacks, or it does not fit the board), 2 bad input.
    """
    parser = argparse.ArgumentParser(prog="python -m helpers.tinyml",
                                     description="Prepare a .tflite model for a microcontroller.")
    parser.add_argument("model", type=Path, help="the .tflite file")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="directory for model_data.h / model_data.cc (default: .)")
    parser.add_argument("--board", default=None, help="show the verdict for this board only")
    parser.add_argument("--name", default="model_data", help="C array name and file stem")
    args = parser.parse_args(argv)
    try:
        flatbuffer = load_tflite(args.model)
        ops = check_ops(flatbuffer)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model:  {args.model} ({len(flatbuffer):,} bytes of flash)")
    print("operators (tflm = the installed TFLM has a kernel):")
    print(ops.to_string())
    missing = list(ops.index[~ops["tflm"]])
    if missing:
        print(f"error: TensorFlow Lite Micro has no kernel for {', '.join(missing)}",
              file=sys.stderr)
        return 1
    try:
        arena = arena_size(flatbuffer)
        header, source = export_c(flatbuffer, args.out, args.name, arena_bytes=arena)
        table = fit_table(len(flatbuffer), arena)
        board = _find_board(table, args.board) if args.board else None
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"flash:  {len(flatbuffer):,} bytes (model)")
    print(f"arena:  {arena:,} bytes (minimum TFLM tensor arena, SRAM)")
    print(f"wrote:  {header} and {source}")
    print(f"allowances: {FLASH_ALLOWANCE_KB:g} KB flash and {SRAM_ALLOWANCE_KB:g} KB SRAM "
          f"for the runtime and the application")
    shown = table.loc[[board]] if board else table
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(shown.drop(columns=["core"]).to_string())
    return 0 if board is None or bool(table.loc[board, "fits"]) else 1


if __name__ == "__main__":
    sys.exit(main())

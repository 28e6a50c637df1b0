"""Which operators a model uses, and whether the installed TFLM has a kernel for each.

Also the TFLM plumbing the other ``helpers.tinyml`` modules share: allocating a model in an
arena of a given size with ``tflite_micro``'s Python runtime, quietly.
"""
from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import pandas as pd
from tflite_micro.python.tflite_micro import runtime

from helpers._tf import captured_output
from helpers.measure import TFLITE_FILE_ID, load_tflite, tflite_schema

__all__ = ["ARENA_FLOOR", "Operator", "model_ops", "tflm_has_kernel", "builtin_ops",
           "tflm_kernels", "check_ops", "unsupported_ops"]

# TFLM's Python runtime crashes (segmentation fault) instead of raising when the arena cannot
# even hold the allocator's own objects (measured: at 460 bytes and below, for any model), so we
# never hand it less than this; every model needs more anyway (a single int8 dense layer: ~1 KB).
ARENA_FLOOR = 512


def _builtin_names() -> dict[int, str]:
    builtin = tflite_schema().BuiltinOperator
    return {value: key for key, value in vars(builtin).items() if not key.startswith("_")}


def _try_allocate(flatbuffer: bytes, arena: int):
    """(interpreter or None, TFLM's error text) for one arena size."""
    if arena < ARENA_FLOOR:  # would crash the process, see ARENA_FLOOR
        raise ValueError(f"arena_bytes must be >= {ARENA_FLOOR}, got {arena}")
    interpreter, error, text = captured_output(
        lambda: runtime.Interpreter.from_bytes(flatbuffer, arena_size=int(arena)))
    if error is not None and not isinstance(error, RuntimeError):
        raise ValueError(f"TFLM cannot read this model: {type(error).__name__}: {error}")
    return interpreter, text.strip()


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

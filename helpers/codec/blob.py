"""The Deep Compression blob: every tensor of a model in one ``bytes`` object, exactly decodable.

Each kernel is stored as Huffman-coded relative indices of its non-zeros plus Huffman-coded
indices into a small codebook; biases are stored raw (float32 or float16). :func:`encode`
(named arrays) and :func:`deep_compress` (a Keras model) give a :class:`CompressedModel`
whose ``breakdown`` says where every byte goes; :func:`decode` and :func:`decompress` invert
them bit for bit.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from helpers import _validate
from helpers._tf import keras
from helpers.models import compile_model
from helpers.clustering import INITS, kmeans
from helpers.codec.huffman import (HuffmanCode, _validate_index_bits, absolute_positions,
                                   huffman_code, relative_indices)

__all__ = ["MAGIC", "RAW_DTYPES", "DEFAULT_BITS", "SECTIONS", "CompressedModel", "named_weights",
           "encode", "deep_compress", "decode", "decompress"]

MAGIC = b"DCZ1"
RAW_DTYPES = {"float32": 0, "float16": 1}
_KIND_RAW32, _KIND_RAW16, _KIND_CODED, _KIND_CODED16 = 0, 1, 2, 3
_FLOAT = {"float32": "<f4", "float16": "<f2"}
DEFAULT_BITS = {2: 5, 4: 8}  # by kernel ndim: fc 5 bits, conv 8 bits (Han et al. 2016)


# ============================================================================ byte helpers
def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, so small numbers take one byte."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, blob: bytes):
        self.blob, self.position = bytes(blob), 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.blob):
            raise ValueError(f"truncated blob: needed {size} bytes at offset {self.position}, "
                             f"{len(self.blob) - self.position} left")
        chunk = self.blob[self.position:self.position + size]
        self.position += size
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 63:
                raise ValueError("corrupt blob: varint too long")

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes from the current position, without consuming them."""
        return self.blob[self.position:self.position + size]


# ============================================================================ one tensor
@dataclass
class _Encoded:
    """One tensor's record, split into sections so the size breakdown is exact."""

    header: bytes = b""
    codebook: bytes = b""
    tables: bytes = b""
    positions: bytes = b""
    values: bytes = b""
    raw: bytes = b""
    weights: np.ndarray | None = None  # what decode() will return for this tensor
    info: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.header + self.codebook + self.tables + self.positions + self.values \
            + self.raw


def _header(name: str, kind: int, shape: tuple[int, ...]) -> bytes:
    encoded = name.encode("utf-8")
    return (_varint(len(encoded)) + encoded + bytes([kind, len(shape)])
            + b"".join(_varint(d) for d in shape))


def _codebook(values: np.ndarray, bits: int, init: str) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, index per value): exact if there are few enough distinct values."""
    distinct, inverse = np.unique(values, return_inverse=True)
    if distinct.size <= 1 << bits:
        return distinct.astype(np.float32), inverse
    return kmeans(values, 1 << bits, init)  # weight sharing inside the codec (lossy)


def _best_index_bits(mask: np.ndarray, index_bits: int | None) -> int:
    """The given index width, or (None) the width 1..8 giving the fewest bytes."""
    if index_bits is not None:
        return _validate_index_bits(index_bits)
    best, best_bytes = 1, None
    for bits in range(1, 9):
        symbols = relative_indices(mask, bits)
        counts = np.bincount(symbols, minlength=1 << bits)
        code = huffman_code(counts)
        size = len(code.to_bytes()) + (code.bits(counts) + 7) // 8
        if best_bytes is None or size < best_bytes:
            best, best_bytes = bits, size
    return best


def _encode_kernel(name: str, array: np.ndarray, bits: int, index_bits: int | None,
                   init: str, codebook_dtype: str = "float32") -> _Encoded:
    flat = array.astype(np.float32).ravel()
    mask = flat != 0
    record = _Encoded(info={"kind": "deep compression", "bits": bits})
    index_bits = _best_index_bits(mask, index_bits)
    codebook, value_symbols = _codebook(flat[mask], bits, init) if mask.any() else \
        (np.zeros(0, np.float32), np.zeros(0, np.int64))
    if codebook_dtype == "float16":  # round the centroids; merge any that become equal
        codebook, remap = np.unique(codebook.astype(np.float16), return_inverse=True)
        value_symbols = remap[value_symbols]
    position_symbols = relative_indices(mask, index_bits)
    kind = _KIND_CODED if codebook_dtype == "float32" else _KIND_CODED16
    record.header = (_header(name, kind, array.shape) + bytes([index_bits])
                     + _varint(codebook.size) + _varint(position_symbols.size))
    record.codebook = codebook.astype(_FLOAT[codebook_dtype]).tobytes()
    codebook = codebook.astype(np.float32)
    if position_symbols.size:
        gap_code = huffman_code(np.bincount(position_symbols, minlength=1 << index_bits))
        value_code = huffman_code(np.bincount(value_symbols, minlength=codebook.size))
        record.tables = gap_code.to_bytes() + value_code.to_bytes()
        record.positions = gap_code.encode(position_symbols)
        record.values = value_code.encode(value_symbols)
    decoded = np.zeros(flat.size, np.float32)
    decoded[mask] = codebook[value_symbols]
    record.weights = decoded.reshape(array.shape)
    record.info.update(index_bits=index_bits, codebook=int(codebook.size),
                       nonzero=int(mask.sum()), escapes=int(position_symbols.size - mask.sum()))
    return record


def _encode_raw(name: str, array: np.ndarray, raw_dtype: str) -> _Encoded:
    kind = RAW_DTYPES[raw_dtype]
    stored = array.astype("<f4" if kind == _KIND_RAW32 else "<f2")
    return _Encoded(header=_header(name, kind, array.shape), raw=stored.tobytes(),
                    weights=stored.astype(np.float32),
                    info={"kind": raw_dtype, "nonzero": int(np.count_nonzero(array))})


def _max_bytes(code: HuffmanCode, count: int) -> int:
    """An upper bound on the bytes ``count`` symbols of ``code`` can take."""
    return (count * int(code.lengths.max(initial=0)) + 7) // 8


def _decode_tensor(reader: _Reader) -> tuple[str, np.ndarray]:
    name = reader.take(reader.varint()).decode("utf-8")
    kind, ndim = reader.byte(), reader.byte()
    shape = tuple(reader.varint() for _ in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if kind in (_KIND_RAW32, _KIND_RAW16):
        dtype = "<f4" if kind == _KIND_RAW32 else "<f2"
        raw = reader.take(size * np.dtype(dtype).itemsize)
        return name, np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(shape)
    if kind not in (_KIND_CODED, _KIND_CODED16):
        raise ValueError(f"corrupt blob: unknown tensor kind {kind} for {name!r}")
    index_bits, k, n_symbols = reader.byte(), reader.varint(), reader.varint()
    dtype = "<f4" if kind == _KIND_CODED else "<f2"
    codebook = np.frombuffer(reader.take(np.dtype(dtype).itemsize * k),
                             dtype=dtype).astype(np.float32)
    flat = np.zeros(size, np.float32)
    if n_symbols:
        gap_code = HuffmanCode.from_bytes(reader.take(((1 << index_bits) + 1) // 2),
                                          1 << index_bits)
        value_code = HuffmanCode.from_bytes(reader.take((k + 1) // 2), k)
        symbols = gap_code.decode(reader.peek(_max_bytes(gap_code, n_symbols)), n_symbols)
        reader.take((gap_code.bits(np.bincount(symbols, minlength=1 << index_bits)) + 7) // 8)
        positions = absolute_positions(symbols, index_bits)
        values = value_code.decode(reader.peek(_max_bytes(value_code, positions.size)),
                                   positions.size)
        reader.take((value_code.bits(np.bincount(values, minlength=k)) + 7) // 8)
        if positions.size and positions[-1] >= size:
            raise ValueError(f"corrupt blob: position {positions[-1]} outside {name!r}")
        flat[positions] = codebook[values]
    return name, flat.reshape(shape)


# ============================================================================ models
def named_weights(model: keras.Model) -> list[tuple[str, np.ndarray]]:
    """``("layer/weight", array)`` for every weight of a model, in ``get_weights()`` order."""
    named = []
    for layer in model.layers:
        for variable in layer.weights:
            short = variable.name.split("/")[-1].split(":")[0]
            named.append((f"{layer.name}/{short}", variable.numpy()))
    if len(named) != len(model.weights):  # nested models or shared layers: fall back
        named = [(v.name.split(":")[0], v.numpy()) for v in model.weights]
    return named


def _bits_for(name: str, array: np.ndarray, bits) -> int:
    layer = name.split("/")[0]
    if isinstance(bits, Mapping):
        value = bits.get(name, bits.get(layer))
        if value is None:
            value = DEFAULT_BITS.get(array.ndim, 8)
    elif bits is None:
        value = DEFAULT_BITS.get(array.ndim, 8)
    else:
        value = bits
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= 8:
        raise ValueError(f"bits for {name!r} must be an integer in [1, 8], got {value!r} "
                         f"(the codebook holds at most 2**bits values)")
    return int(value)


@dataclass
class CompressedModel:
    """The output of :func:`deep_compress`: the blob, what it decodes to, and where bytes go."""

    blob: bytes
    names: list[str]
    weights: list[np.ndarray]  # exactly what decode(blob) returns, in get_weights() order
    breakdown: pd.DataFrame  # bytes per tensor and per stream; sums to len(blob)

    @property
    def size(self) -> int:
        """Bytes of the blob: everything a device needs to rebuild the weights."""
        return len(self.blob)

    def __len__(self) -> int:
        return len(self.blob)

    def ratio(self, reference_bytes: int) -> float:
        """How many times smaller than ``reference_bytes`` (e.g. the float32 TFLite file)."""
        return reference_bytes / self.size

    def per_layer(self) -> pd.DataFrame:
        """Bytes per layer (kernel + bias) and per section, plus each layer's share in %."""
        table = self.breakdown.copy()
        table["layer"] = [name.split("/")[0] for name in table.index]
        numeric = ["params", "nonzero", *SECTIONS, "total B"]
        grouped = table.groupby("layer", sort=False)[numeric].sum()
        grouped["share %"] = (100 * grouped["total B"] / self.size).round(1)
        return grouped

    def to_model(self, model: keras.Model) -> keras.Model:
        """A compiled copy of ``model`` holding the decoded weights."""
        return decompress(self.blob, model)


def encode(tensors: Mapping[str, np.ndarray], bits: int | Mapping[str, int] | None = None,
           index_bits: int | None = None, raw_dtype: str = "float32", init: str = "linear",
           raw: Collection[str] | None = None, codebook_dtype: str = "float32"
           ) -> CompressedModel:
    """Encode named weight tensors into one blob (the engine of :func:`deep_compress`).

    Args:
        tensors: ``{name: array}`` in the order to store them (names like ``"fc1/kernel"``).
        bits: Codebook index width, in [1, 8]: one int, ``{layer or tensor name: bits}`` (a
            layer name is the part before ``/``), or ``None`` for 8 bits on conv kernels
            (4-D) and 5 bits on fully connected ones (2-D), as in Han et al. 2016.
        index_bits: Relative-index symbol width in [1, 8], or ``None`` to pick per tensor
            the width giving the fewest bytes.
        raw_dtype: ``"float32"`` or ``"float16"`` for the tensors stored raw.
        init: k-means initialization for tensors that have to be clustered.
        raw: Names of tensors to store raw; default every tensor with ``ndim < 2``
            (biases). Pass ``()`` to code every tensor.
        codebook_dtype: ``"float32"`` (exact) or ``"float16"`` (half the codebook bytes; the
            decoded weights are then the float16-rounded centroids).

    Returns:
        A :class:`CompressedModel` (``names``, ``weights`` = the decoded arrays, ``blob``,
        ``breakdown``).
    """
    if not isinstance(tensors, Mapping) or not tensors:
        raise ValueError(f"tensors must be a non-empty mapping of name -> array, got "
                         f"{type(tensors).__name__}")
    for argument, value in (("raw_dtype", raw_dtype), ("codebook_dtype", codebook_dtype)):
        _validate.one_of(value, argument, RAW_DTYPES)
    _validate.one_of(init, "init", INITS)
    if index_bits is not None:
        _validate_index_bits(index_bits)
    named = [(str(name), np.asarray(array)) for name, array in tensors.items()]
    known = {n for n, _ in named} | {n.split("/")[0] for n, _ in named}
    for argument, names in (("bits", bits if isinstance(bits, Mapping) else ()),
                            ("raw", raw or ())):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"{argument} names unknown layers or tensors {unknown}")
    records = []
    for name, array in named:
        if array.dtype.kind not in "fiu":
            raise ValueError(f"tensor {name!r} must be numeric, got dtype {array.dtype}")
        if array.size and not np.all(np.isfinite(array)):
            raise ValueError(f"tensor {name!r} must be finite, got NaN or inf")
        stored_raw = array.ndim < 2 if raw is None else (
            name in raw or name.split("/")[0] in raw)
        if stored_raw:
            records.append(_encode_raw(name, array, raw_dtype))
        else:
            records.append(_encode_kernel(name, array, _bits_for(name, array, bits),
                                          index_bits, init, codebook_dtype))
    file_header = MAGIC + _varint(len(records))
    blob = file_header + b"".join(r.to_bytes() for r in records)
    return CompressedModel(blob, [n for n, _ in named], [r.weights for r in records],
                           _breakdown(file_header, named, records))


def _breakdown(file_header: bytes, named, records) -> pd.DataFrame:
    """Bytes per tensor and per section; the total column sums to the blob length."""
    rows = [{"tensor": "(file header)", "stored as": "", "shape": "", "params": 0,
             "nonzero": 0, "codebook size": 0, "index bits": 0, "header B": len(file_header),
             "codebook B": 0, "tables B": 0, "positions B": 0, "values B": 0, "raw B": 0}]
    for (name, array), r in zip(named, records):
        rows.append({"tensor": name, "stored as": r.info["kind"], "shape": str(array.shape),
                     "params": int(array.size), "nonzero": r.info["nonzero"],
                     "codebook size": r.info.get("codebook", 0),
                     "index bits": r.info.get("index_bits", 0),
                     "header B": len(r.header), "codebook B": len(r.codebook),
                     "tables B": len(r.tables), "positions B": len(r.positions),
                     "values B": len(r.values), "raw B": len(r.raw)})
    breakdown = pd.DataFrame(rows).set_index("tensor")
    breakdown["total B"] = breakdown[list(SECTIONS)].sum(axis=1)
    return breakdown


SECTIONS = ("header B", "codebook B", "tables B", "positions B", "values B", "raw B")


def deep_compress(model: keras.Model, bits: int | Mapping[str, int] | None = None,
                  index_bits: int | None = None, raw_dtype: str = "float32",
                  init: str = "linear", codebook_dtype: str = "float32") -> CompressedModel:
    """Encode a (pruned, optionally clustered) model the Deep Compression way.

    Kernels (weights with ``ndim >= 2``) are stored as Huffman-coded relative indices of
    their non-zeros plus Huffman-coded codebook indices; every other weight (biases,
    normalization statistics) is stored raw.

    Args:
        model: A Keras model; prune (and cluster) it first, zeros are what make it small.
        bits: Codebook index width per kernel, in [1, 8] (codebook of at most ``2**bits``
            values): one int, ``{layer or weight name: bits}``, or ``None`` for the paper's
            choice, 8 bits for conv kernels and 5 bits for fully connected ones. A kernel
            with more distinct non-zero values than ``2**bits`` is clustered with k-means.
        index_bits: Width of a relative-index symbol in [1, 8], or ``None`` to pick, per
            kernel, the width that gives the fewest bytes (the paper fixes 8 for conv and 5
            for fc).
        raw_dtype: ``"float32"`` (exact) or ``"float16"`` (half the bytes; the decoded
            biases are then the float16-rounded values) for the non-kernel weights.
        init: k-means centroid initialization when a kernel must be clustered.
        codebook_dtype: ``"float32"`` (exact) or ``"float16"`` (half the codebook bytes;
            the decoded kernels then hold the float16-rounded centroids).

    Returns:
        A :class:`CompressedModel`; ``decode(result.blob)`` equals ``result.weights``, and
        ``result.size`` is the exact byte count of everything needed to rebuild them.

    Example:
        >>> compressed = deep_compress(pruned_and_clustered_model)  # doctest: +SKIP
        >>> compressed.size, compressed.breakdown["total B"].sum()  # doctest: +SKIP
    """
    _validate.model(model)
    return encode(dict(named_weights(model)), bits, index_bits, raw_dtype, init,
                  codebook_dtype=codebook_dtype)


def decode(blob: bytes) -> dict[str, np.ndarray]:
    """Decode a :func:`deep_compress` blob into ``{name: float32 array}``, in model order."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"blob must be bytes, got {type(blob).__name__}")
    reader = _Reader(blob)
    if reader.take(len(MAGIC)) != MAGIC:
        raise ValueError(f"blob is not a Deep Compression blob (it does not start with "
                         f"{MAGIC!r})")
    tensors = dict(_decode_tensor(reader) for _ in range(reader.varint()))
    if reader.position != len(reader.blob):
        raise ValueError(f"corrupt blob: {len(reader.blob) - reader.position} unread bytes")
    return tensors


def decompress(blob: bytes | CompressedModel, model: keras.Model) -> keras.Model:
    """A compiled copy of ``model`` (the architecture) with the weights decoded from ``blob``."""
    _validate.model(model)
    if isinstance(blob, CompressedModel):
        blob = blob.blob
    tensors = list(decode(blob).items())
    targets = model.get_weights()
    if len(tensors) != len(targets):
        raise ValueError(f"blob holds {len(tensors)} tensors but the model has "
                         f"{len(targets)} weights: not the same architecture")
    for (name, array), target in zip(tensors, targets):
        if array.shape != target.shape:
            raise ValueError(f"tensor {name!r} has shape {array.shape} but the model expects "
                             f"{target.shape}: not the same architecture")
    clone = keras.models.clone_model(model)
    clone.set_weights([array for _, array in tensors])
    return compile_model(clone)

"""Entropy coding for the Deep Compression codec: canonical Huffman codes and relative indices.

* :func:`huffman_code` -> :class:`HuffmanCode` (from scratch, canonical, code lengths limited
  to 15 bits so a table is one 4-bit length per symbol), :func:`entropy` (the bound);
* :func:`relative_indices` / :func:`absolute_positions`: sparse positions as gaps between
  non-zeros, with an escape symbol for long runs of zeros (Han et al. 2016, section 3).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from helpers import _validate

__all__ = ["MAX_CODE_LENGTH", "HuffmanCode", "huffman_code", "entropy", "relative_indices",
           "absolute_positions"]

MAX_CODE_LENGTH = 15  # code lengths fit in 4 bits


# ============================================================================ Huffman coding
def _validate_counts(counts) -> np.ndarray:
    array = np.asarray(counts)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array of symbol frequencies, got "
                         f"shape {array.shape}")
    if array.dtype.kind not in "iu" or np.any(array < 0):
        raise ValueError("counts must be non-negative integers (how often each symbol occurs)")
    if array.size > 65536:
        raise ValueError(f"counts must have at most 65536 symbols, got {array.size}")
    return array.astype(np.int64)


def entropy(counts) -> float:
    """Shannon entropy in bits per symbol of a frequency table (a bound for any code)."""
    array = _validate_counts(counts)
    p = array[array > 0] / array.sum() if array.sum() else np.array([1.0])
    return float(-(p * np.log2(p)).sum())


def _huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length of each symbol from the classic Huffman merge (0 for unused symbols)."""
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size == 1:
        lengths[used] = 1  # marks the lone symbol; HuffmanCode stores it in 0 bits
        return lengths
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]  # (weight, tie-break, members)
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, t1, m1 = heapq.heappop(heap)
        w2, t2, m2 = heapq.heappop(heap)
        lengths[m1 + m2] += 1  # every member of a merged node goes one level deeper
        heapq.heappush(heap, (w1 + w2, min(t1, t2), m1 + m2))
    return lengths


@dataclass(frozen=True)
class HuffmanCode:
    """A canonical prefix code over the symbols ``0 .. alphabet_size - 1``.

    Canonical: codes are assigned in order of (length, symbol), so the per-symbol code
    lengths alone define the code, and they are all a decoder needs (``to_bytes``).
    A code with a single used symbol (table length 1) spends zero bits per symbol: the
    decoder knows how many symbols to produce, so nothing needs to be stored.
    """

    lengths: np.ndarray  # code length per symbol, 0 = symbol never occurs

    @property
    def alphabet_size(self) -> int:
        return int(self.lengths.size)

    @property
    def is_lone(self) -> bool:
        """True if only one symbol is used: then every code word is empty (0 bits)."""
        return int(np.count_nonzero(self.lengths)) == 1

    @property
    def codes(self) -> np.ndarray:
        """The canonical code word of each symbol (as an integer of ``lengths`` bits)."""
        codes = np.zeros(self.lengths.size, dtype=np.int64)
        code, previous = 0, 0
        for symbol in sorted(np.flatnonzero(self.lengths), key=lambda s: (self.lengths[s], s)):
            code <<= int(self.lengths[symbol]) - previous
            codes[symbol], previous = code, int(self.lengths[symbol])
            code += 1
        return codes

    def bits(self, counts) -> int:
        """Total encoded length in bits of a message with these symbol counts."""
        counts = _validate_counts(counts)
        if counts.size != self.alphabet_size:
            raise ValueError(f"counts must have {self.alphabet_size} entries (the alphabet), "
                             f"got {counts.size}")
        if np.any((counts > 0) & (self.lengths == 0)):
            raise ValueError("counts has symbols that this code cannot encode (length 0)")
        return 0 if self.is_lone else int((counts * self.lengths).sum())

    def average_length(self, counts) -> float:
        """Mean code length in bits per symbol for a message with these counts."""
        counts = _validate_counts(counts)
        return self.bits(counts) / max(int(counts.sum()), 1)

    def encode(self, symbols) -> bytes:
        """The concatenated code words of ``symbols``, zero-padded to whole bytes."""
        symbols = np.asarray(symbols, dtype=np.int64).ravel()
        if symbols.size == 0:
            return b""
        if symbols.min() < 0 or symbols.max() >= self.alphabet_size \
                or np.any(self.lengths[symbols] == 0):
            raise ValueError("symbols contains values this code cannot encode")
        if self.is_lone:
            return b""
        lengths = self.lengths[symbols]
        longest = int(lengths.max())
        aligned = self.codes[symbols] << (longest - lengths)  # left-align every code word
        shifts = np.arange(longest - 1, -1, -1)
        bit_matrix = (aligned[:, None] >> shifts) & 1
        keep = np.arange(longest) < lengths[:, None]
        return np.packbits(bit_matrix[keep].astype(np.uint8)).tobytes()

    def decode(self, data: bytes, count: int) -> np.ndarray:
        """Read ``count`` symbols from the start of ``data`` (table-driven, one per step).

        Returns:
            The symbols as an int64 array. Raises ValueError if ``data`` runs out.
        """
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        if self.is_lone:
            return np.full(count, int(np.flatnonzero(self.lengths)[0]), dtype=np.int64)
        longest = int(self.lengths.max())
        bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)).astype(np.int64)
        padded = np.concatenate([bits, np.zeros(longest, dtype=np.int64)])
        window = np.zeros(bits.size, dtype=np.int64)  # the next `longest` bits at each position
        for j in range(longest):
            window = (window << 1) | padded[j:j + bits.size]
        table_symbol = np.full(1 << longest, -1, dtype=np.int64)
        table_length = np.zeros(1 << longest, dtype=np.int64)
        for symbol, (code, length) in enumerate(zip(self.codes, self.lengths)):
            if length:
                start = int(code) << (longest - int(length))
                stop = start + (1 << (longest - int(length)))
                table_symbol[start:stop], table_length[start:stop] = symbol, length
        window, table_symbol, table_length = (window.tolist(), table_symbol.tolist(),
                                              table_length.tolist())
        out, position, size = [], 0, len(window)
        for _ in range(count):
            if position >= size:
                raise ValueError(f"Huffman stream ended after {len(out)} of {count} symbols")
            entry = window[position]
            out.append(table_symbol[entry])
            position += table_length[entry]
        if position > size or -1 in out:
            raise ValueError("corrupt Huffman stream (a code word runs past the data)")
        return np.asarray(out, dtype=np.int64)

    def to_bytes(self) -> bytes:
        """The table: one 4-bit code length per symbol of the alphabet, packed two a byte."""
        nibbles = self.lengths.astype(np.uint8)
        if nibbles.size % 2:
            nibbles = np.append(nibbles, 0)
        return ((nibbles[0::2] << 4) | nibbles[1::2]).astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, alphabet_size: int) -> "HuffmanCode":
        """Inverse of :meth:`to_bytes` (the decoder knows the alphabet size)."""
        packed = np.frombuffer(bytes(data), dtype=np.uint8)
        lengths = np.stack([packed >> 4, packed & 15], axis=1).ravel()[:alphabet_size]
        return cls(lengths.astype(np.int64))


def huffman_code(counts, max_length: int = MAX_CODE_LENGTH) -> HuffmanCode:
    """Build an optimal prefix code (Huffman 1952) for symbols with these frequencies.

    Args:
        counts: How often each symbol ``0 .. len(counts) - 1`` occurs (non-negative ints).
        max_length: Longest allowed code word, in [1, 15]. In the rare case Huffman's code
            is longer, the counts are halved (keeping every used symbol) until it fits, as
            JPEG encoders do; the code is then near-optimal.

    Returns:
        A canonical :class:`HuffmanCode`; average length within 1 bit of :func:`entropy`.

    Example:
        >>> code = huffman_code([5, 1, 1, 2])
        >>> code.lengths.tolist(), code.decode(code.encode([0, 3, 1]), 3).tolist()
        ([1, 3, 3, 2], [0, 3, 1])
    """
    counts = _validate_counts(counts)
    max_length = _validate.integer(max_length, "max_length", 1, MAX_CODE_LENGTH)
    used = int(np.count_nonzero(counts))
    if used > 1 << max_length:
        raise ValueError(f"max_length {max_length} cannot give {used} symbols distinct codes")
    lengths = _huffman_lengths(counts)
    while lengths.max(initial=0) > max_length:
        counts = np.where(counts > 0, np.maximum(counts // 2, 1), 0)
        lengths = _huffman_lengths(counts)
    return HuffmanCode(lengths)


# ============================================================================ sparse positions
def _validate_index_bits(index_bits) -> int:
    return _validate.integer(index_bits, "index_bits", 1, 8)


def relative_indices(mask, index_bits: int) -> np.ndarray:
    """Sparse positions as gap symbols: zeros skipped before each non-zero, with escapes.

    Args:
        mask: Which entries are non-zero (any shape; read in C order).
        index_bits: Bits per symbol ``b`` in [1, 8]. Symbols ``0 .. 2**b - 2`` mean "skip that
            many zeros, then a non-zero"; the escape ``2**b - 1`` means "skip ``2**b - 1``
            zeros, no weight" (the paper's padding zero, without needing a stored value).

    Returns:
        The gap symbols (int64). Trailing zeros need no symbol: the shape is known.
    """
    escape = (1 << _validate_index_bits(index_bits)) - 1
    positions = np.flatnonzero(np.asarray(mask).ravel())
    gaps = np.diff(positions, prepend=-1) - 1
    escapes = gaps // escape
    symbols = np.full(int(escapes.sum()) + positions.size, escape, dtype=np.int64)
    symbols[np.cumsum(escapes + 1) - 1] = gaps % escape
    return symbols


def absolute_positions(symbols, index_bits: int) -> np.ndarray:
    """Inverse of :func:`relative_indices`: the flat positions of the non-zero entries."""
    escape = (1 << _validate_index_bits(index_bits)) - 1
    symbols = np.asarray(symbols, dtype=np.int64)
    steps = np.where(symbols == escape, escape, symbols + 1)
    return (np.cumsum(steps) - 1)[symbols != escape]

"""The Deep Compression codec: pruning + weight sharing + Huffman coding, as real bytes.

Han, Mao and Dally (2016), "Deep Compression", ICLR, store a pruned and clustered layer as

1. **sparse positions** as *relative indices*: for each non-zero weight, the number of zeros
   skipped since the previous one. The paper uses a fixed width (8 bits for conv, 5 for fc)
   and inserts a padding zero when a gap does not fit. We use an equivalent exact scheme:
   with ``b`` index bits the largest symbol ``2**b - 1`` is an *escape* meaning "skip that
   many zeros, no weight here", so a long run of zeros costs a few escapes;
2. **values** as indices into a per-layer k-means codebook (``k = 2**bits`` at most; see
   ``helpers.clustering``);
3. both symbol streams **Huffman coded** (from scratch, canonical codes, so a code table is
   just one 4-bit length per symbol).

Everything needed to decode -- header, tensor names and shapes, codebooks, Huffman tables,
bit streams and the raw biases -- goes into one ``bytes`` blob, and the size we report is its
exact length. Codebooks and biases are float32 by default; ``codebook_dtype="float16"`` and
``raw_dtype="float16"`` halve them (the decoded values are then the float16-rounded ones).
``decode(blob)`` gives back the weights bit for bit: an already clustered model is stored
losslessly; a tensor with more distinct values than its codebook allows is clustered first,
and then the decoded weights equal those clustered weights exactly.

The package, by concern:

* :mod:`helpers.codec.huffman` -- :func:`huffman_code` -> :class:`HuffmanCode`,
  :func:`entropy`, :func:`relative_indices` / :func:`absolute_positions`;
* :mod:`helpers.codec.blob` -- :func:`deep_compress` -> :class:`CompressedModel`
  (:func:`encode` for named arrays), :func:`decode`, :func:`decompress`;
* :mod:`helpers.codec.pipeline` -- :func:`deep_compression`, the whole pipeline (prune,
  retrain, share, retrain, encode) on a trained model, cached, with its :data:`RECIPE`.

Used by the benchmark and the Deep Compression part of the conclusion.
"""
from helpers.codec.blob import (DEFAULT_BITS, MAGIC, RAW_DTYPES, SECTIONS, CompressedModel,
                                decode, decompress, deep_compress, encode, named_weights)
from helpers.codec.huffman import (MAX_CODE_LENGTH, HuffmanCode, absolute_positions, entropy,
                                   huffman_code, relative_indices)
from helpers.codec.pipeline import EPOCHS, RECIPE, DeepCompression, Recipe, deep_compression

__all__ = ["huffman_code", "HuffmanCode", "entropy", "relative_indices", "absolute_positions",
           "MAX_CODE_LENGTH", "encode", "deep_compress", "CompressedModel", "decode",
           "decompress", "named_weights", "MAGIC", "RAW_DTYPES", "DEFAULT_BITS", "SECTIONS",
           "deep_compression", "DeepCompression", "Recipe", "RECIPE", "EPOCHS"]

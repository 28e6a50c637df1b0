"""The Deep Compression codec: Huffman coding, relative indices, exact round trips, sizes."""
import numpy as np
import pytest

from helpers import clustering, codec, measure, models
from helpers._tf import keras

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------- Huffman
def _is_prefix_free(code: codec.HuffmanCode) -> bool:
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(code.codes, code.lengths) if n]
    return not any(a != b and b.startswith(a) for a in words for b in words)


def test_huffman_textbook_example():
    code = codec.huffman_code([5, 1, 1, 2])
    assert code.lengths.tolist() == [1, 3, 3, 2]
    assert code.codes.tolist() == [0b0, 0b110, 0b111, 0b10]  # canonical: by (length, symbol)
    assert code.encode([0, 3, 1]) == bytes([0b01011000])  # 0 10 110, zero-padded
    assert code.decode(code.encode([0, 3, 1]), 3).tolist() == [0, 3, 1]


@pytest.mark.parametrize("alphabet, skew", [(2, 0.5), (16, 1.0), (32, 2.0), (256, 1.2)])
def test_huffman_round_trip_and_optimality(alphabet, skew):
    p = 1.0 / np.arange(1, alphabet + 1) ** skew  # Zipf-like, as cluster indices are
    message = RNG.choice(alphabet, size=5000, p=p / p.sum())
    counts = np.bincount(message, minlength=alphabet)
    code = codec.huffman_code(counts)
    np.testing.assert_array_equal(code.decode(code.encode(message), message.size), message)
    assert _is_prefix_free(code)
    assert np.sum(2.0 ** -code.lengths[code.lengths > 0]) == pytest.approx(1.0)  # complete
    h = codec.entropy(counts)
    assert h <= code.average_length(counts) < h + 1  # Shannon's bound, Huffman's guarantee
    assert len(code.encode(message)) == (code.bits(counts) + 7) // 8
    # the canonical table (4 bits per symbol) is all a decoder needs
    again = codec.HuffmanCode.from_bytes(code.to_bytes(), alphabet)
    np.testing.assert_array_equal(again.lengths, code.lengths)
    assert len(code.to_bytes()) == (alphabet + 1) // 2


def test_huffman_beats_fixed_width_on_skewed_data():
    counts = np.array([900, 50, 30, 10, 5, 3, 1, 1])
    assert codec.huffman_code(counts).average_length(counts) < 1.5 < 3  # 3 bits fixed


def test_long_codes_are_limited_to_15_bits():
    fibonacci = [1, 1]
    while len(fibonacci) < 24:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    counts = np.array(fibonacci)  # the worst case: plain Huffman gives a 23-bit code
    assert codec.huffman._huffman_lengths(counts).max() == 23
    code = codec.huffman_code(counts)
    assert code.lengths.max() <= 15 and _is_prefix_free(code)
    message = np.repeat(np.arange(counts.size), counts)
    np.testing.assert_array_equal(code.decode(code.encode(message), message.size), message)


def test_single_symbol_costs_no_bits():
    code = codec.huffman_code([0, 0, 7, 0])
    assert code.is_lone and code.bits([0, 0, 7, 0]) == 0 and code.encode([2] * 7) == b""
    assert code.decode(b"", 7).tolist() == [2] * 7
    assert codec.entropy([0, 0, 7, 0]) == 0.0


def test_truncated_huffman_stream_is_detected():
    code = codec.huffman_code([5, 1, 1, 2])
    with pytest.raises(ValueError, match="ended after"):
        code.decode(b"\xff", 10)


# ---------------------------------------------------------------------------- positions
def test_relative_indices_with_escapes():
    mask = np.zeros(30, bool)
    mask[[1, 2, 12, 29]] = True  # gaps 1, 0, 9, 16
    symbols = codec.relative_indices(mask, index_bits=3)  # escape = 7 = skip 7 zeros
    assert symbols.tolist() == [1, 0, 7, 2, 7, 7, 2]
    np.testing.assert_array_equal(codec.absolute_positions(symbols, 3), [1, 2, 12, 29])


@pytest.mark.parametrize("index_bits", range(1, 9))
def test_positions_round_trip_every_width(index_bits):
    mask = RNG.random(3000) < 0.03
    mask[2000:] = False
    mask[-1] = True  # a run of zeros far longer than any gap limit
    symbols = codec.relative_indices(mask, index_bits)
    assert symbols.max() <= 2 ** index_bits - 1
    np.testing.assert_array_equal(codec.absolute_positions(symbols, index_bits),
                                  np.flatnonzero(mask))


# ---------------------------------------------------------------------------- tensors
def _clustered(shape, sparsity, clusters=32):
    weights = RNG.normal(size=shape).astype(np.float32)
    weights[RNG.random(shape) < sparsity] = 0
    return clustering.shared_weights(weights, clusters) if sparsity < 1 else weights


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("shape", [(700,), (60, 50), (5, 7, 40), (5, 5, 6, 16)])
def test_round_trip_is_exact(shape, sparsity):
    tensor = _clustered(shape, sparsity)
    compressed = codec.encode({"t/kernel": tensor}, bits=5, raw=())
    decoded = codec.decode(compressed.blob)["t/kernel"]
    assert decoded.dtype == np.float32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded, tensor)  # lossless: at most 32 distinct values
    np.testing.assert_array_equal(compressed.weights[0], tensor)
    assert compressed.breakdown["total B"].sum() == compressed.size


def test_long_zero_runs_with_a_fixed_narrow_index():
    tensor = np.zeros((100, 100), np.float32)
    tensor[0, 0], tensor[57, 3], tensor[99, 99] = 1.5, -2.0, 0.25  # gaps of ~5,700 zeros
    for index_bits in (1, 2, 5, 8):
        blob = codec.encode({"w": tensor}, index_bits=index_bits).blob
        np.testing.assert_array_equal(codec.decode(blob)["w"], tensor)


def test_sparser_tensors_take_fewer_bytes():
    sizes = [codec.encode({"w": _clustered((400, 120), s)}, bits=5).size
             for s in (0.0, 0.5, 0.9, 0.99)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] < 400 * 120 * 5 / 8 * 1.01  # Huffman never worse than 5-bit indices
    assert sizes[2] < 400 * 120 * 4 / 10  # 10% of weights left, < 1 byte each: > 10x


def test_codec_clusters_when_there_are_too_many_values():
    tensor = RNG.normal(size=(50, 40)).astype(np.float32)
    tensor[RNG.random(tensor.shape) < 0.8] = 0
    compressed = codec.encode({"w": tensor}, bits=3)
    decoded = codec.decode(compressed.blob)["w"]
    np.testing.assert_array_equal(decoded, compressed.weights[0])  # equal to the clustered
    assert np.unique(decoded[decoded != 0]).size <= 8
    np.testing.assert_array_equal(decoded != 0, tensor != 0)  # zeros stay zeros
    codebook, indices = clustering.kmeans(tensor[tensor != 0], 8)  # the same k-means
    np.testing.assert_array_equal(decoded[tensor != 0], codebook[indices])
    rms = np.sqrt(np.mean((decoded - tensor)[tensor != 0] ** 2))
    assert rms < 0.25 * tensor[tensor != 0].std()  # 8 levels: Lloyd-Max gives ~0.19 sigma


def test_float16_raw_tensors():
    bias = RNG.normal(size=100).astype(np.float32)
    exact = codec.encode({"b": bias}).size
    half = codec.encode({"b": bias}, raw_dtype="float16")
    assert exact - half.size == 200
    np.testing.assert_array_equal(codec.decode(half.blob)["b"],
                                  bias.astype(np.float16).astype(np.float32))


def test_float16_codebooks():
    tensor = _clustered((60, 50), 0.8)
    exact = codec.encode({"w": tensor}, bits=5)
    half = codec.encode({"w": tensor}, bits=5, codebook_dtype="float16")
    assert half.breakdown.loc["w", "codebook B"] * 2 == exact.breakdown.loc["w", "codebook B"]
    decoded = codec.decode(half.blob)["w"]
    np.testing.assert_array_equal(decoded, half.weights[0])
    np.testing.assert_array_equal(decoded, tensor.astype(np.float16).astype(np.float32))


# ---------------------------------------------------------------------------- a real model
def _magnitude_prune(model, sparsity: dict[str, float]):
    """A simple per-layer magnitude mask (the course's pruning module does this properly)."""
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for layer in pruned.layers:
        if layer.name in sparsity:
            kernel, bias = layer.get_weights()
            threshold = np.quantile(np.abs(kernel), sparsity[layer.name])
            layer.set_weights([np.where(np.abs(kernel) > threshold, kernel, 0), bias])
    return models.compile_model(pruned)


@pytest.fixture(scope="module")
def lenet_clustered(mnist5k):
    base = models.pretrained("lenet5", mnist5k, progress=False)
    # mild sparsities: without fine-tuning, harder pruning costs accuracy (fc1 at 90%: -6 pts)
    pruned = _magnitude_prune(base, {"conv2": 0.5, "fc1": 0.8, "fc2": 0.5, "logits": 0.3})
    return clustering.cluster_model(pruned, {"conv1": 64, "conv2": 256, "fc1": 32,
                                             "fc2": 32, "logits": 32})


def test_lenet_round_trip_and_accuracy(lenet_clustered, mnist5k):
    compressed = codec.deep_compress(lenet_clustered)
    decoded = codec.decode(compressed.blob)
    assert list(decoded) == ["conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias",
                             "fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias",
                             "logits/kernel", "logits/bias"]
    for array, original in zip(decoded.values(), lenet_clustered.get_weights()):
        np.testing.assert_array_equal(array, original)  # bit for bit
    restored = codec.decompress(compressed.blob, lenet_clustered)
    clustered_accuracy = measure.accuracy(lenet_clustered, mnist5k.x_test, mnist5k.y_test)
    # no fine-tuning after mild pruning + clustering: measured 0.934 (seed 0) and 0.909
    # (seed 1) on the converged baselines (98.7 / 98.0 %); 0.87 leaves ~4 points below the low
    assert clustered_accuracy > 0.87
    assert measure.accuracy(restored, mnist5k.x_test, mnist5k.y_test) == clustered_accuracy


def test_lenet_size_breakdown(lenet_clustered):
    compressed = codec.deep_compress(lenet_clustered)
    table = compressed.breakdown
    assert table["total B"].sum() == compressed.size == len(compressed.blob)
    assert table.loc["fc1/kernel", "codebook size"] <= 32
    assert table.loc["conv2/kernel", "codebook size"] <= 256
    assert table.loc["fc1/bias", "raw B"] == 120 * 4
    assert table.loc["fc1/kernel", "nonzero"] == pytest.approx(9600, abs=5)
    float32_bytes = 4 * lenet_clustered.count_params()
    assert compressed.ratio(float32_bytes) > 12  # about 15x at these mild sparsities
    layers = compressed.per_layer()
    assert list(layers.index) == ["(file header)", "conv1", "conv2", "fc1", "fc2", "logits"]
    assert layers["total B"].sum() == compressed.size
    assert layers.loc["fc1", "params"] == 48_120
    assert layers["share %"].sum() == pytest.approx(100, abs=0.5)
    # biases in float16 save 2 bytes each, nothing else changes
    half = codec.deep_compress(lenet_clustered, raw_dtype="float16")
    assert compressed.size - half.size == 2 * 236


def test_lossy_codec_on_an_unclustered_model(lenet_clustered, mnist5k):
    pruned = _magnitude_prune(models.pretrained("lenet5", mnist5k, progress=False),
                              {"fc1": 0.9})
    compressed = codec.deep_compress(pruned, bits=4)
    restored = compressed.to_model(pruned)
    for decoded, stored, original in zip(restored.get_weights(), compressed.weights,
                                         pruned.get_weights()):
        np.testing.assert_array_equal(decoded, stored)
        if original.ndim >= 2:
            assert np.unique(decoded[decoded != 0]).size <= 16
            np.testing.assert_array_equal(decoded == 0, original == 0)
    # fc1 90% pruned and 4-bit codebooks, no fine-tuning: measured 0.906 (seed 0) and 0.860
    # (seed 1; the newcomer's machine got 0.898 against the old > 0.9): 0.80 leaves 6 points
    assert measure.accuracy(restored, mnist5k.x_test, mnist5k.y_test) > 0.80


# ---------------------------------------------------------------------------- the pipeline
QUICK_EPOCHS = 2  # the benchmark's --quick budget: this result is cached and shared with it


@pytest.fixture(scope="module")
def quick_pipeline(lenet, mnist5k):
    return codec.deep_compression(lenet, mnist5k, epochs=QUICK_EPOCHS)


def test_deep_compression_contract(quick_pipeline, lenet, mnist5k):
    result, recipe = quick_pipeline, codec.RECIPE
    decoded = codec.decode(result.blob)  # the model holds exactly what the blob decodes to
    for array, weights in zip(decoded.values(), result.model.get_weights()):
        np.testing.assert_array_equal(array, weights)
    assert result.size == len(result.blob) == result.encoded.breakdown["total B"].sum()
    for layer in ("conv1", "conv2", "fc1", "fc2", "logits"):
        kernel = result.model.get_layer(layer).get_weights()[0]
        target = recipe.sparsity.get(layer, 0.0)
        assert 1 - np.count_nonzero(kernel) / kernel.size == pytest.approx(target, abs=0.01)
        assert np.unique(kernel[kernel != 0]).size <= 2 ** recipe.bits[layer]
    # the size hardly depends on training (sparsity and codebooks fix it): measured 42.3x and
    # 42.0x at 2 epochs, 41.8x and 41.5x at 32 (seeds 0 and 1); the benchmark's target is 40x
    assert result.ratio(len(measure.to_tflite(lenet))) > 40
    # 2 epochs is too short to recover (the full 32 give 98.0 / 97.6 %): measured 0.841 and
    # 0.868 (seeds 0, 1); 0.78 leaves 6 points below the lower one
    assert measure.accuracy(result.model, mnist5k.x_test, mnist5k.y_test) > 0.78


def test_deep_compression_is_cached(quick_pipeline, lenet, mnist5k):
    from helpers.cache import cache_dir

    before = sorted(cache_dir().glob("deepcomp-*.weights.h5"))
    again = codec.deep_compression(lenet, mnist5k, epochs=QUICK_EPOCHS)
    assert sorted(cache_dir().glob("deepcomp-*.weights.h5")) == before  # nothing retrained
    assert again.blob == quick_pipeline.blob


def test_deep_compression_bad_arguments(lenet, mnist5k):
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        codec.deep_compression(lenet, mnist5k, epochs=1)
    with pytest.raises(ValueError, match="recipe must be a codec.Recipe"):
        codec.deep_compression(lenet, mnist5k, recipe={"fc1": 0.9})
    with pytest.raises(ValueError, match="data must be a Dataset"):
        codec.deep_compression(lenet, mnist5k.x_train)


# ---------------------------------------------------------------------------- bad input
def test_bad_arguments(lenet_clustered):
    tensor = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"bits for 'w' must be an integer in \[1, 8\], got 9"):
        codec.encode({"w": tensor}, bits=9)
    with pytest.raises(ValueError, match=r"index_bits must be an integer in \[1, 8\], got 0"):
        codec.encode({"w": tensor}, index_bits=0)
    with pytest.raises(ValueError, match="raw_dtype must be one of"):
        codec.encode({"w": tensor}, raw_dtype="int8")
    with pytest.raises(ValueError, match="codebook_dtype must be one of"):
        codec.encode({"w": tensor}, codebook_dtype="bfloat16")
    with pytest.raises(ValueError, match="must be finite"):
        codec.encode({"w": np.full((2, 2), np.nan)})
    with pytest.raises(ValueError, match="unknown layers"):
        codec.deep_compress(lenet_clustered, bits={"fc9": 4})
    with pytest.raises(ValueError, match="must be a Keras model"):
        codec.deep_compress(tensor)
    with pytest.raises(ValueError, match="counts must be non-negative"):
        codec.huffman_code([3, -1])
    with pytest.raises(ValueError, match=r"max_length must be an integer in \[1, 15\]"):
        codec.huffman_code([1, 2], max_length=16)


def test_corrupt_blobs_and_wrong_architectures(lenet_clustered):
    blob = codec.deep_compress(lenet_clustered).blob
    with pytest.raises(ValueError, match="not a Deep Compression blob"):
        codec.decode(b"PK\x03\x04" + blob[4:])
    with pytest.raises(ValueError, match="truncated|ended|corrupt"):
        codec.decode(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="unread bytes"):
        codec.decode(blob + b"\x00")
    with pytest.raises(ValueError, match="not the same architecture"):
        codec.decompress(blob, models.build("mlp"))

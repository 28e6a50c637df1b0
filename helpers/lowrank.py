"""Low-rank factorization: replace one big layer by two thin ones (deeper/low-rank notebook).

A Dense kernel ``W`` (``m x n``) is approximated by its truncated SVD,
``W ~= U_r S_r V_r^T`` (Eckart-Young: the best rank-``r`` approximation), and the layer becomes
two Dense layers, ``m -> r`` (no bias, no activation) and ``r -> n`` (the original bias and
activation). That stores ``r (m + n)`` weights instead of ``m n``: fewer whenever
``r < m n / (m + n)``.

A Conv2D kernel ``(kh, kw, c_in, c_out)`` is reshaped to ``(kh kw c_in) x c_out`` and factored
the same way into a ``kh x kw`` conv with ``r`` filters followed by a ``1 x 1`` conv with
``c_out`` filters (Jaderberg et al. 2014; Zhang et al. 2015).

* :func:`svd_factors`, :func:`rank_for_energy` -- the linear algebra, on one kernel;
* :func:`singular_values` -- the spectrum of every factorable layer (how compressible is it?);
* :func:`factorize` -- a new, genuinely smaller Keras model (explicit ranks or an energy
  fraction);
* :func:`fine_tune` -- a few epochs to recover the accuracy lost by truncation.

Used by the low-rank factorization deeper notebook and the benchmark.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from helpers import _validate
from helpers._tf import keras
from helpers.models import compile_model, train

__all__ = ["svd_factors", "rank_for_energy", "singular_values", "break_even_rank", "factorize",
           "factorized_ranks", "fine_tune"]


# ---------------------------------------------------------------------------- linear algebra
def _matrix(kernel) -> np.ndarray:
    array = np.asarray(kernel)
    if array.ndim not in (2, 4):
        raise ValueError(f"kernel must be 2-D (Dense) or 4-D (Conv2D), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("kernel must be finite (no NaN or inf)")
    return array.reshape(-1, array.shape[-1]).astype(np.float64)


def _validate_rank(rank, matrix_shape: tuple[int, int], name: str = "rank") -> int:
    full = min(matrix_shape)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
            or not 1 <= rank <= full:
        raise ValueError(f"{name} must be an integer in [1, {full}] (min of the "
                         f"{matrix_shape[0]} x {matrix_shape[1]} kernel matrix), got {rank!r}")
    return int(rank)


def _validate_energy(energy) -> float:
    return _validate.number(energy, "energy", 0, 1, include_low=False)


def svd_factors(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Two factors ``A`` (``m x r``) and ``B`` (``r x n``) with ``A @ B ~= kernel``.

    The singular values are split evenly, ``A = U_r sqrt(S_r)`` and ``B = sqrt(S_r) V_r^T``,
    so both factors have similar scales (which helps fine-tuning). A 4-D conv kernel is
    first reshaped to ``(kh kw c_in) x c_out``.

    Args:
        kernel: A Dense kernel ``(m, n)`` or a Conv2D kernel ``(kh, kw, c_in, c_out)``.
        rank: Rank ``r`` in [1, min(m, n)].

    Returns:
        ``(A, B)`` as float32. ``rank = min(m, n)`` reproduces the kernel (up to rounding).
    """
    matrix = _matrix(kernel)
    rank = _validate_rank(rank, matrix.shape)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    return ((u[:, :rank] * root).astype(np.float32),
            (root[:, None] * vt[:rank]).astype(np.float32))


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` of the total ``sum(s**2)``.

    Args:
        singular_values: Singular values of a kernel (any order).
        energy: Fraction in (0, 1] of the squared Frobenius norm to keep.
    """
    energy = _validate_energy(energy)
    s = np.sort(np.asarray(singular_values, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("singular_values must not be empty")
    total = float(np.sum(s ** 2))
    if total == 0:
        return 1
    kept = np.cumsum(s ** 2) / total
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, s.size))


def _factorable(layer) -> bool:
    return type(layer) in (keras.layers.Dense, keras.layers.Conv2D) \
        and getattr(layer, "groups", 1) == 1


def singular_values(model: keras.Model) -> dict[str, np.ndarray]:
    """Singular values of each Dense / Conv2D kernel, by layer name (largest first)."""
    _validate.model(model)
    return {layer.name: np.linalg.svd(_matrix(layer.get_weights()[0]), compute_uv=False)
            for layer in model.layers if _factorable(layer)}


def break_even_rank(kernel_shape: tuple[int, ...]) -> int:
    """Largest rank that still stores fewer kernel weights than the original layer."""
    shape = tuple(int(d) for d in kernel_shape)
    m, n = int(np.prod(shape[:-1])), shape[-1]
    return max((m * n - 1) // (m + n), 0)


# ---------------------------------------------------------------------------- layers
def _factor_layers(layer, rank: int) -> list[keras.layers.Layer]:
    """The two layers replacing ``layer`` (built later) and their weights."""
    config = layer.get_config()
    common = {k: config[k] for k in ("kernel_regularizer", "kernel_constraint") if k in config}
    if isinstance(layer, keras.layers.Dense):
        first = keras.layers.Dense(rank, use_bias=False, name=f"{layer.name}_u", **common)
        second = keras.layers.Dense(layer.units, activation=config["activation"],
                                    use_bias=layer.use_bias, name=f"{layer.name}_v")
    else:
        first = keras.layers.Conv2D(rank, layer.kernel_size, strides=layer.strides,
                                    padding=layer.padding, data_format=layer.data_format,
                                    dilation_rate=layer.dilation_rate, use_bias=False,
                                    name=f"{layer.name}_u", **common)
        second = keras.layers.Conv2D(layer.filters, 1, data_format=layer.data_format,
                                     activation=config["activation"],
                                     use_bias=layer.use_bias, name=f"{layer.name}_v")
    return [first, second]


def _factor_weights(layer, rank: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    weights = layer.get_weights()
    kernel = weights[0]
    a, b = svd_factors(kernel, rank)
    if kernel.ndim == 4:
        a = a.reshape(kernel.shape[:-1] + (rank,))
        b = b.reshape(1, 1, rank, kernel.shape[-1])
    return [a], [b] + weights[1:]


def _choose_ranks(model, ranks, energy) -> dict[str, int]:
    layers = {layer.name: layer for layer in model.layers if _factorable(layer)}
    if (ranks is None) == (energy is None):
        raise ValueError("give exactly one of ranks (an int or {layer: rank}) and energy "
                         f"(a fraction in (0, 1]), got ranks={ranks!r}, energy={energy!r}")
    if energy is not None:
        energy = _validate_energy(energy)
        return {name: rank_for_energy(s, energy)
                for name, s in singular_values(model).items()}
    if isinstance(ranks, Mapping):
        unknown = sorted(set(ranks) - set(layers))
        if unknown:
            raise ValueError(f"ranks names layers that cannot be factorized {unknown}; "
                             f"Dense/Conv2D layers: {sorted(layers)}")
        return {name: _validate_rank(rank, _matrix(layers[name].get_weights()[0]).shape,
                                     f"ranks[{name!r}]")
                for name, rank in ranks.items()}
    return {name: _validate_rank(ranks, _matrix(layer.get_weights()[0]).shape)
            for name, layer in layers.items()}


def factorize(model: keras.Model, ranks: int | Mapping[str, int] | None = None,
              energy: float | None = None, only_if_smaller: bool = True) -> keras.Model:
    """A new, smaller model with Dense / Conv2D layers replaced by SVD-factored pairs.

    Args:
        model: A trained ``keras.Sequential`` model (not modified).
        ranks: One rank for every Dense/Conv2D layer, or ``{layer name: rank}`` (other layers
            are copied unchanged). Each rank must be in [1, min(m, n)].
        energy: Instead of ranks: keep, per layer, the fewest singular values holding this
            fraction in (0, 1] of the kernel's energy ``sum(s**2)``.
        only_if_smaller: Leave a layer unfactored when its rank would not save weights
            (``r (m + n) >= m n``). Set False to factor anyway (e.g. to check that the full
            rank reproduces the model).

    Returns:
        A new compiled ``keras.Sequential`` model; a factored layer ``fc1`` becomes ``fc1_u``
        (``m -> r``, linear, no bias) and ``fc1_v`` (``r -> n``, original bias and activation);
        :func:`factorized_ranks` lists the ranks used.
    """
    _validate.sequential(model)
    chosen = _choose_ranks(model, ranks, energy)
    new_layers, weights = [keras.layers.InputLayer(input_shape=model.input_shape[1:])], []
    for layer in model.layers:
        rank = chosen.get(layer.name)
        kernel_shape = layer.get_weights()[0].shape if rank else None
        if rank and (not only_if_smaller or rank <= break_even_rank(kernel_shape)):
            pair = _factor_layers(layer, rank)
            first, second = _factor_weights(layer, rank)
            new_layers += pair
            weights += [first, second]
        else:
            clone = layer.__class__.from_config(layer.get_config())
            new_layers.append(clone)
            weights.append(layer.get_weights())
    factored = keras.Sequential(new_layers, name=f"{model.name}_lowrank")
    for layer, values in zip(factored.layers, weights):
        layer.set_weights(values)
    return compile_model(factored)


def factorized_ranks(model: keras.Model) -> dict[str, int]:
    """The rank of each factored pair in a :func:`factorize` result, by original layer name."""
    return {layer.name[:-2]: (layer.units if isinstance(layer, keras.layers.Dense)
                              else layer.filters)
            for layer in model.layers if layer.name.endswith("_u")}


def fine_tune(model: keras.Model, data, epochs: int = 3, learning_rate: float = 5e-4,
              batch_size: int = 64, progress: bool = False) -> keras.Model:
    """Train a factored model a few epochs (Adam, small learning rate) to recover accuracy.

    Args:
        model: The model to train in place (e.g. from :func:`factorize`).
        data: A :class:`helpers.data.Dataset`.
        epochs: Epochs (>= 1).
        learning_rate: Adam learning rate in (0, 1).
        batch_size: Examples per step.
        progress: Show a progress bar.

    Returns:
        The same model, trained.
    """
    _validate.model(model)
    _validate.learning_rate(learning_rate)
    compile_model(model, learning_rate)
    train(model, data, epochs=epochs, batch_size=batch_size, progress=progress)
    return model

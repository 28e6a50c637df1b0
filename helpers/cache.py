"""The course cache: one place for its directory, atomic writes, keys, weight digests, cached
models and cached arrays (sweeps), and the run seed.

Training is the slow part of every lesson, so each trained model and each measured sweep is
stored once under :func:`cache_dir` and loaded on the next run. Keys are short hashes of
everything the result depends on (recipe, dataset, seed, the input model's weights), so a
changed recipe trains anew instead of loading a stale file.

``EDGE_AI_SEED`` (an integer, default 0) shifts every training seed of the kit (see
:func:`seeded`): ``EDGE_AI_SEED=1 make test`` trains every model under another seed, which is
how we check that no test passes by luck of one seed. Cache files carry the shift in their
name, so the two runs never share a model.
"""
from __future__ import annotations

import contextvars
import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from helpers import _validate

__all__ = ["cache_dir", "atomic_write", "cache_key", "model_digest", "cached_model",
           "cached_arrays", "Busy", "share_work", "seed_offset", "seeded"]


def seed_offset() -> int:
    """The integer in ``$EDGE_AI_SEED`` (0 if unset): added to every training seed."""
    text = os.environ.get("EDGE_AI_SEED", "0").strip() or "0"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"EDGE_AI_SEED must be an integer, got {text!r}") from None


def seeded(seed: int) -> int:
    """The seed a training run actually uses: ``seed + EDGE_AI_SEED``."""
    return int(seed) + seed_offset()


def cache_dir() -> Path:
    """Directory of cached datasets, weights and sweeps.

    ``$EDGE_AI_CACHE`` if set, else ``~/.cache/model-compression-edge-ai``. Delete it to
    retrain everything from scratch.
    """
    path = Path(os.environ.get("EDGE_AI_CACHE",
                               Path.home() / ".cache" / "model-compression-edge-ai"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Parallel test workers may fill the cache at the same time; a rename is atomic, so a
    reader never sees half a file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="-" + path.name)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def cache_key(*parts) -> str:
    """A short, stable hash of JSON-serializable parts (recipe, dataset, seed, ...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _without_names(config):
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


def model_digest(model, names: bool = False) -> str:
    """A short hash of a Keras model's architecture and weights (a cache key of its results).

    Layer names are left out unless ``names``: Keras numbers unnamed layers (``input_1``,
    ``input_2``, ...) in creation order, so the same model would otherwise hash differently in
    each session. A TFLite flatbuffer stores the names, so ``measure.to_tflite`` keys its
    files with them (``names=True`` hashes the whole model config, wiring included).
    """
    _validate.model(model)
    if names:
        text = model.to_json()
    else:
        architecture = [(type(layer).__name__, _without_names(layer.get_config()))
                        for layer in model.layers]
        text = json.dumps([model.input_shape, architecture], sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode())
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:12]


def _path(key: str, suffix: str) -> Path:
    shift = seed_offset()
    return cache_dir() / (f"{key}{f'-seedshift{shift}' if shift else ''}{suffix}")


class Busy(Exception):
    """Another process is computing this cache entry right now (only inside :func:`share_work`)."""


_SKIP_BUSY = contextvars.ContextVar("skip_busy", default=False)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the entry's file lock: wait for it, or raise :class:`Busy` in ``share_work``'s
    first pass."""
    with open(path.with_suffix(".lock"), "w") as lock:
        if not _SKIP_BUSY.get():
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(path.name) from None
        yield


Job = TypeVar("Job")


def share_work(jobs: Sequence[Job], run: Callable[[Job], object]) -> list:
    """``[run(job) for job in jobs]``, shared with other processes that run the same jobs.

    ``run`` fills the cache (``cached_model``, ``cached_arrays``). A first pass runs every job
    whose entries no other process is computing and defers the others; a second pass waits
    for those (their results are then loaded). Two test workers, or two students on a hub,
    that start the same experiment thus train half of it each instead of one waiting for the
    other to train all of it. The results are the same as the plain loop's, in ``jobs``'s
    order.
    """
    results, deferred = {}, []
    for index, job in enumerate(jobs):
        token = _SKIP_BUSY.set(True)
        try:
            results[index] = run(job)
        except Busy:
            deferred.append(index)
        finally:
            _SKIP_BUSY.reset(token)
    for index in deferred:
        results[index] = run(jobs[index])
    return [results[index] for index in range(len(jobs))]


def cached_model(key: str, build_model: Callable[[], object],
                 fit: Callable[[object], object]):
    """Return ``build_model()`` with weights from the cache, training it with ``fit`` once.

    A file lock makes parallel workers (``pytest -n 2``) train a model once; a corrupt or
    stale file is retrained and replaced.
    """
    path = _path(key, ".weights.h5")
    with _locked(path):
        model = build_model()
        if path.exists():
            try:
                model.load_weights(path)
                return model
            except Exception as error:  # a corrupt or stale file: train again, replace it
                warnings.warn(f"ignoring unreadable cache file {path} ({error}); retraining")
                model = build_model()
        fit(model)
        atomic_write(path, lambda tmp: model.save_weights(str(tmp)))
        return model


def cached_arrays(key: str, compute: Callable[[], Mapping[str, np.ndarray]],
                  cache: bool = True) -> dict[str, np.ndarray]:
    """NumPy arrays computed once (a sweep, a table of measurements), then loaded from an .npz.

    Args:
        key: The cache key (include everything the arrays depend on, e.g. via
            :func:`cache_key` and :func:`model_digest`).
        compute: Returns a mapping of names to arrays; called only on a cache miss.
        cache: ``False`` computes every time and stores nothing.
    """
    if not cache:
        return {name: np.asarray(value) for name, value in compute().items()}
    path = _path(key, ".npz")
    with _locked(path):
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as saved:
                    return {name: saved[name] for name in saved.files}
            except Exception as error:  # corrupt: compute again
                warnings.warn(f"ignoring unreadable cache file {path} ({error}); recomputing")
        arrays = {name: np.asarray(value) for name, value in compute().items()}
        atomic_write(path, lambda tmp: np.savez(tmp.open("wb"), **arrays))
        return arrays

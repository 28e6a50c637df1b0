"""Tests for helpers.cache: atomic writes, keys, weight digests, cached models and arrays, and
the EDGE_AI_SEED shift. Models here are tiny and untrained (a few seconds in all)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tf_keras as keras

from helpers import cache


def _tiny(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3)])


def test_cache_write_is_atomic(tmp_path):
    target = tmp_path / "x.bin"

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.atomic_write(target, broken)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    cache.atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole"


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path / "new"))
    assert cache.cache_dir() == tmp_path / "new" and (tmp_path / "new").is_dir()


def test_cache_key_is_stable_and_depends_on_every_part():
    key = cache.cache_key({"epochs": 3, "lr": 1e-3}, "mnist5k", 0)
    assert key == cache.cache_key({"lr": 1e-3, "epochs": 3}, "mnist5k", 0)  # dict order
    assert len(key) == 12
    assert key != cache.cache_key({"epochs": 4, "lr": 1e-3}, "mnist5k", 0)
    assert key != cache.cache_key({"epochs": 3, "lr": 1e-3}, "mnist5k", 1)


def test_model_digest_sees_weights_not_layer_names():
    first, second = _tiny(0), _tiny(0)  # Keras names them dense, dense_1: same digest
    assert cache.model_digest(first) == cache.model_digest(second)
    second.set_weights([w + 1 for w in second.get_weights()])
    assert cache.model_digest(first) != cache.model_digest(second)
    with pytest.raises(ValueError, match="model must be a Keras model, got str"):
        cache.model_digest("model")


def test_cached_model_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    fits = []

    def fit(model):
        fits.append(1)
        model.set_weights([np.full_like(w, 0.5) for w in model.get_weights()])

    first = cache.cached_model("tiny", _tiny, fit)
    again = cache.cached_model("tiny", lambda: _tiny(1), fit)
    assert len(fits) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), again.get_weights()))


def test_corrupt_cached_model_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    cache._path("tiny", ".weights.h5").write_bytes(b"not hdf5")  # carries EDGE_AI_SEED's shift
    fits = []
    with pytest.warns(UserWarning, match="retraining"):
        cache.cached_model("tiny", _tiny, lambda model: fits.append(1))
    assert fits == [1]


def test_cached_arrays_compute_once_and_cache_false_never_stores(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"rows": np.arange(6.0).reshape(2, 3), "edges": [0, 1]}

    first = cache.cached_arrays("sweep", compute)
    again = cache.cached_arrays("sweep", compute)
    assert len(calls) == 1 and np.array_equal(first["rows"], again["rows"])
    cache.cached_arrays("fresh", compute, cache=False)
    assert len(calls) == 2 and not (tmp_path / "fresh.npz").exists()


def test_seed_shift_changes_seeds_and_cache_files(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    monkeypatch.setenv("EDGE_AI_SEED", "2")
    assert cache.seed_offset() == 2 and cache.seeded(1) == 3
    cache.cached_arrays("sweep", lambda: {"x": np.zeros(1)})
    assert (tmp_path / "sweep-seedshift2.npz").exists()
    monkeypatch.setenv("EDGE_AI_SEED", "two")
    with pytest.raises(ValueError, match="EDGE_AI_SEED must be an integer, got 'two'"):
        cache.seed_offset()


# Two processes run the same six jobs through share_work; each job takes 1 s and records
# which process computed it. A plain loop makes the later process wait and then load (it
# computes 0 or 1 of the six); sharing splits them about 3 / 3, and still at least 2 / 4
# when one process starts a second late.
_WORKER = textwrap.dedent("""
    import json, os, time
    import numpy as np
    from helpers import cache

    def run(job):
        def compute():
            time.sleep(1.0)
            return {"by": np.array([os.getpid()]), "job": np.array([job])}
        return int(cache.cached_arrays(f"job{job}", compute)["by"][0])

    print(json.dumps({"pid": os.getpid(), "by": cache.share_work(list(range(6)), run)}))
""")


def test_share_work_splits_the_jobs_between_processes_and_each_runs_once(tmp_path):
    env = {**os.environ, "EDGE_AI_CACHE": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER], env=env, text=True,
                                stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    first, second = outputs
    assert first["by"] == second["by"]  # both see every job's one result, in order
    computed = {pid: first["by"].count(pid) for pid in (first["pid"], second["pid"])}
    assert sum(computed.values()) == 6 and min(computed.values()) >= 2, computed


def test_share_work_in_one_process_is_the_plain_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AI_CACHE", str(tmp_path))
    assert cache.share_work([3, 1, 2], lambda job: job * 10) == [30, 10, 20]
    assert cache.share_work([], lambda job: job) == []

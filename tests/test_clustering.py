"""Weight sharing: from-scratch k-means against scikit-learn and TFMOT, models, fine-tuning."""
import numpy as np
import pytest

from helpers import clustering, measure, models
from helpers._tf import keras

RNG = np.random.default_rng(0)


def _mse(values, codebook, indices):
    return float(np.mean((values - codebook[indices]) ** 2))


@pytest.fixture(scope="module")
def pruned(lenet):
    """LeNet with 90% of fc1 and 50% of fc2 removed by magnitude (no fine-tuning)."""
    model = keras.models.clone_model(lenet)
    model.set_weights(lenet.get_weights())
    for name, sparsity in (("fc1", 0.9), ("fc2", 0.5)):
        kernel, bias = model.get_layer(name).get_weights()
        keep = np.abs(kernel) > np.quantile(np.abs(kernel), sparsity)
        model.get_layer(name).set_weights([kernel * keep, bias])
    return models.compile_model(model)


# ---------------------------------------------------------------------------- k-means
@pytest.mark.parametrize("init", clustering.INITS)
def test_kmeans_matches_scikit_learn(init):
    from sklearn.cluster import KMeans

    values = np.concatenate([RNG.uniform(-0.1, 0.1, 3000), RNG.normal(0.02, 0.02, 2000)])
    codebook, indices = clustering.kmeans(values, 16, init=init, max_iterations=300)
    start = clustering.initial_centroids(values, 16, init)
    assert np.bincount(clustering.assign(values, start)).all()  # same start, no empty cluster
    reference = KMeans(16, init=start[:, None], n_init=1, max_iter=300, tol=0,
                       algorithm="lloyd").fit(values[:, None])
    centers = np.sort(reference.cluster_centers_.ravel())
    assert codebook.size == 16 and np.all(np.diff(codebook) > 0)
    np.testing.assert_allclose(codebook, centers, rtol=1e-5, atol=1e-7)
    assert _mse(values, codebook, indices) == pytest.approx(reference.inertia_ / values.size,
                                                            rel=1e-4)


def test_linear_init_is_tfmot_linear_init():
    from tensorflow_model_optimization.python.core.clustering.keras import (
        clustering_centroids)

    weights = RNG.normal(size=(40, 30)).astype(np.float32)
    tfmot_init = clustering_centroids.LinearCentroidsInitialisation(weights, 8)
    np.testing.assert_allclose(clustering.initial_centroids(weights, 8, "linear"),
                               tfmot_init.get_cluster_centroids().numpy(), atol=1e-6)


def test_density_init_spaces_the_cdf_evenly():
    values = RNG.exponential(size=10_000)
    centroids = clustering.initial_centroids(values, 10, "density")
    cdf = np.searchsorted(np.sort(values), centroids) / values.size
    np.testing.assert_allclose(cdf, (np.arange(10) + 0.5) / 10, atol=2e-3)


def test_empty_clusters_are_reseeded():
    values = np.concatenate([RNG.laplace(0, 0.01, 5000), [1.0, -0.8]])  # two far outliers
    start = clustering.initial_centroids(values, 16, "linear")
    assert (np.bincount(clustering.assign(values, start), minlength=16) == 0).sum() > 5
    codebook, indices = clustering.kmeans(values, 16, init="linear")
    assert codebook.size == 16 and np.bincount(indices.ravel()).all()  # every entry used


def test_lloyd_iterations_only_lower_the_error():
    values = RNG.normal(size=5000)
    start = clustering.initial_centroids(values, 8, "random", seed=3)
    error_at_start = _mse(values, start, clustering.assign(values, start))
    codebook, indices = clustering.kmeans(values, 8, init="random", seed=3)
    assert _mse(values, codebook, indices) < 0.8 * error_at_start


def test_few_distinct_values_are_kept_exactly():
    values = np.array([[0.5, -1.25], [0.5, 3.0]], np.float32)
    codebook, indices = clustering.kmeans(values, 4)
    np.testing.assert_array_equal(codebook, [-1.25, 0.5, 3.0])
    np.testing.assert_array_equal(codebook[indices], values)


# ---------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("clusters", [2, 3, 16, 256])
def test_cluster_weights_keeps_zeros_and_at_most_k_values(clusters):
    weights = RNG.normal(size=(5, 5, 6, 16)).astype(np.float32)
    weights[RNG.random(weights.shape) < 0.7] = 0
    codebook, indices = clustering.cluster_weights(weights, clusters)
    shared = codebook[indices]
    assert indices.shape == weights.shape and indices.dtype == np.uint8
    assert codebook.size <= clusters and np.unique(shared).size <= clusters
    assert codebook[0] == 0
    np.testing.assert_array_equal(shared == 0, weights == 0)  # pruned stay pruned, no new 0s


def test_without_preserve_zeros_zeros_are_clustered_like_any_value():
    weights = RNG.normal(size=1000).astype(np.float32)
    weights[:600] = 0
    shared = clustering.shared_weights(weights, 4, preserve_zeros=False)
    assert np.unique(shared).size <= 4
    assert np.count_nonzero(shared) > 400  # small weights were merged with the zeros' cluster


def test_all_zero_and_dense_tensors():
    codebook, indices = clustering.cluster_weights(np.zeros((3, 3)), 8)
    assert codebook.tolist() == [0.0] and not indices.any()
    dense = RNG.normal(size=(30, 30)).astype(np.float32) + 5  # nothing pruned
    codebook, _ = clustering.cluster_weights(dense, 8)
    assert codebook.size == 8 and 0 not in codebook  # all 8 entries go to real values


# ---------------------------------------------------------------------------- models
def test_cluster_model(lenet, mnist5k):
    clustered = clustering.cluster_model(lenet, 16)
    assert all(n <= 16 for n in clustering.unique_values(clustered).values())
    assert clustering.unique_values(lenet)["fc1"] > 40_000  # the original is untouched
    for layer in ("conv1", "fc1"):  # biases are not clustered
        np.testing.assert_array_equal(clustered.get_layer(layer).get_weights()[1],
                                      lenet.get_layer(layer).get_weights()[1])
    base = measure.accuracy(lenet, mnist5k.x_test, mnist5k.y_test)
    # 16 values per kernel: measured change +0.0 (seed 0) and +0.1 points (seed 1)
    assert measure.accuracy(clustered, mnist5k.x_test, mnist5k.y_test) > base - 0.01


def test_cluster_model_per_layer(pruned):
    clustered = clustering.cluster_model(pruned, {"conv2": 256, "fc1": 4})
    counts = clustering.unique_values(clustered)
    assert counts["fc1"] <= 4 and counts["conv2"] <= 256
    assert counts["fc2"] == clustering.unique_values(pruned)["fc2"]  # not in the mapping
    np.testing.assert_array_equal(clustered.get_layer("fc1").get_weights()[0] == 0,
                                  pruned.get_layer("fc1").get_weights()[0] == 0)


def test_keep_clusters_fine_tunes_centroids(pruned, mnist5k):
    clustered = clustering.cluster_model(pruned, {"fc1": 4, "fc2": 4})
    before = measure.accuracy(clustered, mnist5k.x_test, mnist5k.y_test)
    zeros = clustered.get_layer("fc1").get_weights()[0] == 0
    codebook_before = np.unique(clustered.get_layer("fc1").get_weights()[0])
    models.compile_model(clustered, 5e-4)
    models.train(clustered, mnist5k, epochs=1, progress=False,
                 callbacks=[clustering.KeepClusters()])
    kernel = clustered.get_layer("fc1").get_weights()[0]
    counts = clustering.unique_values(clustered)
    assert counts["fc1"] <= 4 and counts["fc2"] <= 4
    np.testing.assert_array_equal(kernel == 0, zeros)
    assert not np.array_equal(np.unique(kernel), codebook_before)  # the centroids moved
    after = measure.accuracy(clustered, mnist5k.x_test, mnist5k.y_test)
    # 4 values, one epoch of centroid fine-tuning: measured gains of 6.2 (seed 0) and 8.3
    # points (seed 1); asking for 1 point leaves 5
    assert after > before + 0.01


# ---------------------------------------------------------------------------- TFMOT
def test_from_scratch_kmeans_beats_tfmot_initial_clustering(lenet):
    """TFMOT without fine-tuning keeps its initial (linear) centroids; Lloyd improves them."""
    before = lenet.get_weights()
    stripped = clustering.cluster_with_tfmot(lenet, 16, init="linear", epochs=0)
    for original, now in zip(before, lenet.get_weights()):  # the input model is untouched
        np.testing.assert_array_equal(original, now)
    tfmot_kernel = stripped.get_layer("fc2").get_weights()[0]
    kernel = lenet.get_layer("fc2").get_weights()[0]
    assert np.unique(tfmot_kernel).size <= 16
    ours = clustering.shared_weights(kernel, 16, preserve_zeros=False)
    assert np.mean((ours - kernel) ** 2) < np.mean((tfmot_kernel - kernel) ** 2)


def test_tfmot_sparsity_preserving_clustering_with_fine_tuning(pruned, mnist5k):
    stripped = clustering.cluster_with_tfmot(pruned, 16, data=mnist5k, epochs=1,
                                             preserve_sparsity=True)
    counts = clustering.unique_values(stripped)
    assert counts["fc1"] <= 16 and counts["fc2"] <= 16
    zeros = pruned.get_layer("fc1").get_weights()[0] == 0
    assert np.all(stripped.get_layer("fc1").get_weights()[0][zeros] == 0)
    # measured 0.960 (seed 0) and 0.961 (seed 1): 0.9 leaves 6 points
    assert measure.accuracy(stripped, mnist5k.x_test, mnist5k.y_test) > 0.9


def test_keep_clusters_on_a_named_model_through_a_distiller(pruned, lenet, mnist5k):
    from helpers.distillation import Distiller

    student = clustering.cluster_model(pruned, {"fc1": 4})
    teacher_weights = lenet.get_weights()
    distiller = models.compile_model(Distiller(lenet, student), 5e-4)
    models.train(distiller, mnist5k, epochs=1, progress=False,
                 callbacks=[clustering.KeepClusters(student)])
    assert clustering.unique_values(student)["fc1"] <= 4
    for before, after in zip(teacher_weights, lenet.get_weights()):
        np.testing.assert_array_equal(before, after)  # the teacher is not touched


# ---------------------------------------------------------------------------- bad input
def test_bad_arguments(lenet, mnist5k):
    weights = RNG.normal(size=(10, 10))
    with pytest.raises(ValueError, match=r"clusters must be an integer in \[2, 256\], got 1"):
        clustering.kmeans(weights, 1)
    with pytest.raises(ValueError, match=r"clusters must be an integer in \[2, 256\], got 257"):
        clustering.cluster_weights(weights, 257)
    with pytest.raises(ValueError, match=r"got 2.5"):
        clustering.cluster_weights(weights, 2.5)
    with pytest.raises(ValueError, match="init must be one of"):
        clustering.kmeans(weights, 4, init="kmeans++")
    with pytest.raises(ValueError, match="finite"):
        clustering.kmeans(np.array([1.0, np.nan, 2.0]), 2)
    with pytest.raises(ValueError, match="empty"):
        clustering.cluster_weights(np.zeros(0), 4)
    with pytest.raises(ValueError, match=r"clusters\['fc1'\] must be an integer"):
        clustering.cluster_model(lenet, {"fc1": 300})
    with pytest.raises(ValueError, match="unknown layers"):
        clustering.cluster_model(lenet, {"fc7": 16})
    with pytest.raises(ValueError, match="data must be a Dataset"):
        clustering.cluster_with_tfmot(lenet, 16, epochs=1)
    with pytest.raises(ValueError, match="max_iterations"):
        clustering.kmeans(weights, 4, max_iterations=0)
    with pytest.raises(ValueError, match="model must be a Keras model"):
        clustering.KeepClusters("fc1")
    with pytest.raises(ValueError, match="data must be a Dataset"):
        clustering.pcqat(lenet, None)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        clustering.pcqat(lenet, mnist5k, epochs=0)

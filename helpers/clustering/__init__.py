"""Weight sharing (clustering): many weights, few distinct values (deeper/weight clustering).

Deep Compression (Han et al. 2016, "Deep Compression", ICLR) replaces the weights of a layer
by ``k`` shared values, the centroids of a 1-D k-means over the weights. A layer then stores a
small *codebook* (``k`` floats) plus one ``log2(k)``-bit *index* per weight.

* :func:`kmeans` -- 1-D k-means from scratch in NumPy, with the paper's three centroid
  initializations: ``"linear"`` (evenly spaced between min and max, best in the paper),
  ``"density"`` (evenly spaced on the weights' CDF) and ``"random"`` (Forgy: k random weights).
* :func:`cluster_weights` -- one tensor to ``(codebook, indices)``; pruned zeros stay exactly
  zero (they are not clustered, so a pruned-then-clustered layer keeps its sparsity).
* :func:`cluster_model` -- every kernel of a Keras model, per layer, in a new model.
* :class:`KeepClusters` -- a Keras callback that fine-tunes the *centroids*: after every
  batch each weight is reset to the mean of its cluster (the average of the cluster's
  gradient steps, TFMOT's ``GradientAggregation.AVG``); pruned zeros stay zero.
* :func:`cluster_with_tfmot` -- the library route: ``tfmot.clustering.keras.cluster_weights``,
  fine-tuning, then ``strip_clustering``;
* :func:`pcqat` -- prune- and cluster-preserving quantization-aware training (TFMOT's
  collaborative optimization), for a model that is pruned, clustered and then int8.

* :mod:`helpers.clustering.sweep` -- the notebook's measured, cached experiments
  (:func:`cluster_sweep`, :func:`init_comparison`, :func:`sparsity_preservation`).

The package: :mod:`~helpers.clustering.scratch` (k-means and models),
:mod:`~helpers.clustering.tfmot` (the library route), :mod:`~helpers.clustering.sweep`.
Taught in ``lessons/deeper/weight_clustering.ipynb``; also used by ``helpers.codec`` (Deep
Compression) and the benchmark.
"""
from helpers.clustering.scratch import (INITS, MAX_CLUSTERS, MIN_CLUSTERS, TFMOT_INITS,
                                        KeepClusters, assign, cluster_model, cluster_weights,
                                        initial_centroids, kmeans, shared_weights,
                                        unique_values)
from helpers.clustering.sweep import (SWEEP_CLUSTERS, cluster_sweep, init_comparison,
                                      sparsity_preservation)
from helpers.clustering.tfmot import cluster_with_tfmot, pcqat

__all__ = ["INITS", "TFMOT_INITS", "MIN_CLUSTERS", "MAX_CLUSTERS", "initial_centroids", "assign",
           "kmeans", "cluster_weights", "shared_weights", "cluster_model", "unique_values",
           "KeepClusters", "cluster_with_tfmot", "pcqat", "SWEEP_CLUSTERS", "cluster_sweep",
           "init_comparison", "sparsity_preservation"]

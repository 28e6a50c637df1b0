"""Pruning: remove the weights, neurons or filters that matter least (taught in ``01_pruning``).

Three layers of the same idea, from the inside out:

* **from scratch, in NumPy** (for teaching): :func:`magnitude_mask` keeps the largest
  ``|w|`` of one tensor, :func:`global_magnitude_masks` uses one threshold for many tensors;
  :func:`magnitude_masks` and :func:`prune_low_magnitude` apply them to a Keras model, per
  layer or with a global threshold, and return masks you can inspect or a pruned copy;
* **with TFMOT** (what you would ship): :func:`pruning_schedule` (``ConstantSparsity`` or
  ``PolynomialDecay``), :func:`prune_with_tfmot` (wraps each layer with its own sparsity),
  :func:`fine_tune` (trains with ``UpdatePruningStep``, then strips the wrappers with
  ``strip_pruning``) and :func:`prune_and_fine_tune` (all of it, cached);
* **structured** pruning: :func:`prune_filters` removes whole filters / neurons with the
  smallest L1 norm and returns a genuinely smaller dense model.

:func:`sparsity_report` shows, per layer, how many weights are left; :func:`sparsity_sweep`
measures accuracy and file sizes over a range of sparsities (the data behind the lesson's
plot and ``helpers.widgets.sparsity_explorer``).

The NumPy masks use TFMOT's rule, so they can be checked against it: keep the
``k = max(round(n * (1 - sparsity)), 1)`` largest magnitudes (ties at the threshold are kept).
Used by ``lessons/01_pruning.ipynb`` and ``solutions/lab1_pruning.ipynb``.
"""
from helpers.pruning.magnitude import (SCOPES, PRUNABLE_TYPES, magnitude_mask,
                                       global_magnitude_masks, prunable_layers, magnitude_masks,
                                       layer_sparsities, copy_model, apply_masks,
                                       prune_low_magnitude, sparsity_report)
from helpers.pruning.with_tfmot import (SCHEDULES, pruning_schedule, prune_with_tfmot, is_wrapped,
                                        strip_pruning, fine_tune, fine_tune_dense_control,
                                        prune_and_fine_tune, to_sparse_tflite, tflite_ops)
from helpers.pruning.structured import filter_norms, prune_filters
from helpers.pruning.sweep import (SparsitySweep, sparsity_sweep, SPARSITY, SPARSITY_MEASURED,
                                   ACCURACY_ONE_SHOT, ACCURACY_FINE_TUNED, TFLITE_BYTES,
                                   TFLITE_GZIP_BYTES)

__all__ = ["SCOPES", "SCHEDULES", "PRUNABLE_TYPES", "magnitude_mask", "global_magnitude_masks",
           "prunable_layers", "magnitude_masks", "layer_sparsities", "copy_model", "apply_masks",
           "prune_low_magnitude", "sparsity_report", "pruning_schedule", "prune_with_tfmot",
           "is_wrapped", "strip_pruning", "fine_tune", "fine_tune_dense_control",
           "prune_and_fine_tune", "to_sparse_tflite", "tflite_ops", "filter_norms",
           "prune_filters", "SparsitySweep", "sparsity_sweep",
           "SPARSITY", "SPARSITY_MEASURED", "ACCURACY_ONE_SHOT", "ACCURACY_FINE_TUNED",
           "TFLITE_BYTES", "TFLITE_GZIP_BYTES"]

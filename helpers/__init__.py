"""Shared helpers for the *Model Compression for Edge AI* notebooks and labs.

Importing this package configures TensorFlow for the course, once:

* ``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is Keras 2 (``tf_keras``), which the
  TensorFlow Model Optimization Toolkit (TFMOT) needs;
* TensorFlow's C++ and Python logs are quieted to errors only.

Import ``helpers`` *before* TensorFlow; TensorFlow itself loads on first use (see
``helpers._tf``), so tools that do not need it, like ``python -m helpers.grading``, start fast.
Each technique lives in its own module (``helpers.data``, ``helpers.models``,
``helpers.measure``, ...); the names listed in ``__all__`` are the public API.
"""
from __future__ import annotations

import os
import sys
import warnings

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "TensorFlow was imported before `helpers`, so tf.keras may be Keras 3, which TFMOT "
        "does not support. Restart the kernel and import `helpers` first.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same numbers on every x86 CPU

_PUBLIC = {  # name -> module; imported on first use so `python -m helpers.grading` stays fast
    "load_dataset": "helpers.data",
    "pretrained": "helpers.models",
    "set_seed": "helpers.models",
    "evaluate": "helpers.measure",
    "compare": "helpers.measure",
    "prune_low_magnitude": "helpers.pruning",
    "prune_and_fine_tune": "helpers.pruning",
    "quantize_dynamic_range": "helpers.quantization",
    "quantize_float16": "helpers.quantization",
    "quantize_int8": "helpers.quantization",
    "Distiller": "helpers.distillation",
    "cluster_model": "helpers.clustering",
    "factorize": "helpers.lowrank",
    "deep_compress": "helpers.codec",
    "export_c": "helpers.tinyml",
    "arena_size": "helpers.tinyml",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")

"""Shared helpers for the *Model Compression for Edge AI* notebooks and labs.

Importing this package configures TensorFlow for the course, once:

* ``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is Keras 2 (``tf_keras``), which the
  TensorFlow Model Optimization Toolkit (TFMOT) needs;
* TensorFlow's C++ and Python logs are quieted to errors only.

Import ``helpers`` *before* TensorFlow; TensorFlow itself loads on first use (see
``helpers._tf``), so tools that do not need it, like ``python -m helpers.course``, start fast.
Each technique lives in its own module (``helpers.data``, ``helpers.models``,
``helpers.measure``, ``helpers.pruning``, ...), each with its ``__all__``; this package itself
exposes only ``load_dataset`` and ``set_seed``. Instructor tooling (lab generation, grader,
benchmark and TinyML command lines) lives apart, in ``helpers.course``.
"""
from __future__ import annotations

import importlib
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

# The two names a notebook calls on `helpers` itself (the parameters cell's `load_dataset`,
# lesson 04's `set_seed`); everything else is used through its module (`helpers.pruning`, ...).
# Imported on first use, so `import helpers` and `python -m helpers.course` stay fast.
_PUBLIC = {"load_dataset": "helpers.data", "set_seed": "helpers.models"}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")

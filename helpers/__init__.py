"""Shared helpers for the *Model Compression for Edge AI* notebooks and labs.

Importing this package configures TensorFlow for the course, once:

* ``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is Keras 2 (``tf_keras``), which the
  TensorFlow Model Optimization Toolkit (TFMOT) needs;
* TensorFlow's C++ and Python logs are quieted to errors only.

Import ``helpers`` *before* TensorFlow. Each technique lives in its own module
(``helpers.data``, ``helpers.models``, ``helpers.measure``, ...); the names listed in
``__all__`` are the public API.
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



def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probes) sent to /dev/null."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    import absl.logging

    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity(absl.logging.ERROR)


_import_tensorflow_quietly()

from helpers.data import load_dataset  # noqa: E402
from helpers.models import pretrained, set_seed  # noqa: E402

__all__ = ["load_dataset", "pretrained", "set_seed"]
__version__ = "0.1.0"

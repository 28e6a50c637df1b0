"""Import TensorFlow and Keras 2 once, with TensorFlow's C++ start-up chatter silenced.

Modules that need TensorFlow do ``from helpers._tf import tf, keras``; ``helpers/__init__``
has already set ``TF_USE_LEGACY_KERAS=1`` so that ``keras`` here is tf-keras (Keras 2).
"""
import os


def _import_quietly():
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)  # CUDA probes print to fd 2 before logging is configured
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe ("failed call to cuInit")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


tf = _import_quietly()
import absl.logging  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")
absl.logging.set_verbosity(absl.logging.ERROR)

__all__ = ["tf", "keras"]

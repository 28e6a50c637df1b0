"""Import TensorFlow and Keras 2 once, with TensorFlow's C++ start-up chatter silenced.

Modules that need TensorFlow do ``from helpers._tf import tf, keras``; ``helpers/__init__``
has already set ``TF_USE_LEGACY_KERAS=1`` so that ``keras`` here is tf-keras (Keras 2).
:func:`captured_output` is the one place that redirects C++ output (the import's CUDA probe,
the TFLite converter's logs, TFLM's error messages).

Input pipelines run without tf.data's autotuning (:func:`_without_autotune`): with TensorFlow
2.21 its background thread keeps each finished iterator alive until its next wake-up, and
Keras makes one iterator per epoch, so two trainings sharing the CPU sat idle for about a
quarter of their wall time (measured: LeNet-5, 15 epochs in each of two processes on 2 cores,
31.8 and 34.5 s for 24-25 CPU-seconds each; without autotuning 24.4 and 25.4 s). Our data
are arrays in memory, which autotuning does not speed up, and it changes no result: it tunes
buffer sizes and parallelism, not the order of the elements.
"""
import ctypes
import os
import sys
import tempfile
from collections.abc import Callable


def _flush_c_streams() -> None:
    """fflush(NULL): C++ ``printf``/``std::cout`` output is buffered until flushed."""
    ctypes.CDLL(None).fflush(None)


def captured_output(call: Callable[[], object],
                    fd: int = 2) -> tuple[object, Exception | None, str]:
    """Run ``call`` with the C-level file descriptor ``fd`` sent to a temporary file.

    TensorFlow, its converter and TFLM print from C++, which Python's ``sys.stdout`` and
    ``sys.stderr`` never see. Returns (result, exception or None, captured text).
    """
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(fd)
        os.dup2(capture.fileno(), fd)
        result, error = None, None
        try:
            result = call()
        except Exception as exc:  # reported to the caller with the captured text
            error = exc
        finally:
            _flush_c_streams()
            os.dup2(saved, fd)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
    return result, error, text


def _import_quietly():
    def load():
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe ("failed call to cuInit")
        return tensorflow

    tensorflow, error, text = captured_output(load)  # CUDA probes print before logging is set
    if error is not None:
        raise ImportError(f"TensorFlow failed to import: {error}\n{text}") from error
    return tensorflow


def _without_autotune(options_class) -> None:
    """Make every ``tf.data.Options()`` start with ``autotune.enabled = False``.

    Keras builds its input pipelines with ``dataset.with_options(tf.data.Options())``, so
    this reaches every ``fit``, ``evaluate`` and ``predict`` on arrays, a student's included.
    """
    original = options_class.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.autotune.enabled = False

    options_class.__init__ = __init__


tf = _import_quietly()
_without_autotune(tf.data.Options)
import absl.logging  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")
absl.logging.set_verbosity(absl.logging.ERROR)

__all__ = ["tf", "keras", "captured_output"]

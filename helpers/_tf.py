"""Import TensorFlow and Keras 2 once, with TensorFlow's C++ start-up chatter silenced.

Modules that need TensorFlow do ``from helpers._tf import tf, keras``; ``helpers/__init__``
has already set ``TF_USE_LEGACY_KERAS=1`` so that ``keras`` here is tf-keras (Keras 2).
:func:`captured_output` is the one place that redirects C++ output (the import's CUDA probe,
the TFLite converter's logs, TFLM's error messages).
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


tf = _import_quietly()
import absl.logging  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")
absl.logging.set_verbosity(absl.logging.ERROR)

__all__ = ["tf", "keras", "captured_output"]

"""The same model on other runtimes: ONNX Runtime, and PyTorch / ExecuTorch where installed.

Taught in ``lessons/deeper/other_runtimes.ipynb``. The notebook shows the calls once
(``tf2onnx.convert.from_keras``, ``onnxruntime.InferenceSession``, ``quantize_static``,
``torch.export`` and ExecuTorch's ``to_edge_transform_and_lower``); this module keeps the
reusable versions, the batch-1 meters and the comparison table.

* ONNX: :func:`to_onnx` (Keras -> ONNX bytes through tf2onnx), :func:`predict_onnx`,
  :func:`latency_onnx_ms`, :func:`onnx_ops`, and ONNX Runtime's own int8 quantization:
  :func:`quantize_onnx_dynamic` (weights only) and :func:`quantize_onnx_static`
  (weights and activations, calibrated on images through :class:`ImageCalibrationReader`).
* PyTorch (the ``pytorch`` extra: ``pip install -e .[pytorch]`` or ``make pytorch``):
  :func:`torch_lenet5` rebuilds a Keras LeNet-5 in PyTorch with the same weights,
  :func:`quantize_torch_dynamic`, :func:`predict_torch`, :func:`latency_torch_ms`;
  :func:`to_executorch` exports a ``.pte`` program and :func:`predict_executorch` /
  :func:`latency_executorch_ms` run it in ExecuTorch's runtime.

PyTorch and ExecuTorch are imported on first use, so ``import helpers.runtimes`` works
without them; :func:`available` says which runtimes are installed.
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from helpers import _validate, cache, measure, plots, widgets
from helpers._tf import captured_output, tf

__all__ = ["available", "INSTALL_PYTORCH", "quiet_pytorch", "to_onnx", "onnx_session", "predict_onnx",
           "latency_onnx_ms", "onnx_ops", "ImageCalibrationReader", "quantize_onnx_dynamic",
           "quantize_onnx_static", "torch_lenet5", "predict_torch", "latency_torch_ms",
           "quantize_torch_dynamic", "torch_bytes", "to_torch_mobile", "load_torch_mobile",
           "to_executorch", "cached_executorch", "predict_executorch", "latency_executorch_ms",
           "deployment_row", "runtime_explorer"]

INSTALL_PYTORCH = "pip install -e '.[pytorch]'   (or: make pytorch)"


def available() -> dict[str, bool]:
    """Which runtimes are installed: ``onnxruntime``, ``tf2onnx``, ``torch``, ``executorch``."""
    return {name: importlib.util.find_spec(name) is not None
            for name in ("onnxruntime", "tf2onnx", "torch", "executorch")}


def _require(name: str) -> None:
    if not available()[name]:
        hint = INSTALL_PYTORCH if name in ("torch", "executorch") else f"pip install {name}"
        raise ValueError(f"{name} is not installed: install it with {hint}")


def _images(x, name: str = "x") -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty batch of images (N, H, W, C), "
                         f"got shape {x.shape}")
    return x


# ---------------------------------------------------------------------------- ONNX
def to_onnx(model, opset: int = 17) -> bytes:
    """Convert a built Keras model to ONNX bytes with tf2onnx (input ``"image"``, any batch)."""
    model = _validate.model(model, built=True)
    opset = _validate.integer(opset, "opset", 9, 21)
    _require("tf2onnx")
    import tf2onnx

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image"),)
    result, error, _ = captured_output(
        lambda: tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset))
    if error is not None:
        raise ValueError(f"tf2onnx cannot convert model {model.name!r}: {error}") from None
    return result[0].SerializeToString()


def _onnx_bytes(model) -> bytes:
    if not isinstance(model, (bytes, bytearray)) or len(model) == 0:
        raise ValueError(f"model must be ONNX bytes (from to_onnx), got {type(model).__name__}")
    return bytes(model)


def onnx_session(model: bytes, threads: int = 1):
    """An ONNX Runtime ``InferenceSession`` on the CPU with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _validate.positive_int(threads, "threads")
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(_onnx_bytes(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ValueError(f"not a valid ONNX model ({len(model)} bytes): {error}") from None


def predict_onnx(model: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX model on a batch of images (NHWC float32), through ONNX Runtime."""
    session, x = onnx_session(model), _images(x)
    name = session.get_inputs()[0].name
    step = _validate.positive_int(batch_size, "batch_size")
    return np.concatenate([session.run(None, {name: x[i:i + step]})[0]
                           for i in range(0, len(x), step)])


def latency_onnx_ms(model: bytes, input_shape=(28, 28, 1), runs: int = 200,
                    warmup: int = 20) -> float:
    """Median batch-1 latency in milliseconds through ONNX Runtime (1 thread)."""
    session = onnx_session(model)
    feed = {session.get_inputs()[0].name: np.zeros((1, *input_shape), np.float32)}
    return measure.median_ms(lambda: session.run(None, feed), runs, warmup)


def onnx_ops(model: bytes) -> dict[str, int]:
    """How often each operator type appears in an ONNX graph, most frequent first."""
    import onnx

    graph = onnx.load_from_string(_onnx_bytes(model)).graph
    ops = [node.op_type for node in graph.node]
    return dict(sorted(((op, ops.count(op)) for op in set(ops)), key=lambda kv: -kv[1]))


class ImageCalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` over a batch of images, one image per call.

    ``quantize_static`` calls ``get_next()`` until it returns ``None`` and records each
    activation's range (what TFLite's ``representative_dataset`` does).
    """

    def __init__(self, images: np.ndarray, input_name: str = "image"):
        self._images = _images(images, "images")
        self._input_name, self._position = input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next ``{input_name: image[None]}``, or ``None`` when all were read."""
        if self._position >= len(self._images):
            return None
        self._position += 1
        return {self._input_name: self._images[self._position - 1][None]}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._position = 0


def _quantize_with_files(model: bytes, quantize) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(_onnx_bytes(model))
        quantize(str(source), str(target))
        return target.read_bytes()


def quantize_onnx_dynamic(model: bytes) -> bytes:
    """ONNX Runtime's dynamic quantization: int8 weights, activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    return _quantize_with_files(model, lambda src, dst: quantize_dynamic(
        src, dst, weight_type=QuantType.QInt8))


def quantize_onnx_static(model: bytes, calibration_images: np.ndarray,
                         per_channel: bool = True) -> bytes:
    """ONNX Runtime's static quantization: int8 weights and activations (QDQ format).

    Args:
        model: Float ONNX bytes (from :func:`to_onnx`).
        calibration_images: Images whose activation ranges set the int8 scales (100-500
            training images are plenty).
        per_channel: One scale per output channel of each weight (as TFLite does).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    images = _images(calibration_images, "calibration_images")
    input_name = onnx_session(model).get_inputs()[0].name
    return _quantize_with_files(model, lambda src, dst: quantize_static(
        src, dst, ImageCalibrationReader(images, input_name), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        per_channel=per_channel))


# ---------------------------------------------------------------------------- PyTorch
def quiet_pytorch() -> None:
    """Silence PyTorch's and torchao's deprecation notices and start ExecuTorch's runtime once,
    capturing the CPU-probe lines its C++ code prints on start-up."""
    import logging
    import warnings

    for name in ("torchao", "torch", "torch._dynamo", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"torch.*")
    if available()["executorch"]:
        from executorch.extension.pybindings import portable_lib

        captured_output(lambda: captured_output(portable_lib._threadpool_get_thread_count, fd=1))


def _torch():
    _require("torch")
    import torch

    return torch


def torch_lenet5(keras_model):
    """The Keras LeNet-5 (``helpers.models.lenet5``) rebuilt in PyTorch, with its weights.

    PyTorch stores a convolution kernel as (out, in, kh, kw) where Keras has (kh, kw, in,
    out), a dense kernel as (out, in) where Keras has (in, out), and flattens feature maps
    channels-first (C, H, W) where Keras flattens (H, W, C): the first dense layer's rows
    are permuted to match. The module takes NCHW images.
    """
    keras_model = _validate.model(keras_model, "keras_model", built=True)
    names = [layer.name for layer in keras_model.layers]
    expected = ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "logits"]
    if names != expected:
        raise ValueError(f"keras_model must be a helpers.models.lenet5 model (layers "
                         f"{expected}), got layers {names}")
    torch = _torch()
    nn = torch.nn
    conv1, conv2 = (keras_model.get_layer(n) for n in ("conv1", "conv2"))
    fc1, fc2, logits = (keras_model.get_layer(n) for n in ("fc1", "fc2", "logits"))
    pool_shape = keras_model.get_layer("pool2").output_shape[1:]  # (H, W, C)
    net = nn.Sequential(
        nn.Conv2d(conv1.kernel.shape[2], conv1.filters, 5,
                  padding=2 if conv1.padding == "same" else 0), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(conv2.kernel.shape[2], conv2.filters, 5,
                  padding=2 if conv2.padding == "same" else 0), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(fc1.kernel.shape[0], fc1.units), nn.ReLU(),
        nn.Linear(fc2.kernel.shape[0], fc2.units), nn.ReLU(),
        nn.Linear(logits.kernel.shape[0], logits.units)).eval()
    fc1_kernel = fc1.kernel.numpy().reshape(*pool_shape, -1).transpose(2, 0, 1, 3)
    kernels = {0: conv1.kernel.numpy().transpose(3, 2, 0, 1),
               3: conv2.kernel.numpy().transpose(3, 2, 0, 1),
               7: fc1_kernel.reshape(-1, fc1.units).T, 9: fc2.kernel.numpy().T,
               11: logits.kernel.numpy().T}
    biases = {0: conv1.bias, 3: conv2.bias, 7: fc1.bias, 9: fc2.bias, 11: logits.bias}
    with torch.no_grad():
        for index, kernel in kernels.items():
            net[index].weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            net[index].bias.copy_(torch.from_numpy(biases[index].numpy()))
    return net


def _nchw(x) -> np.ndarray:
    return np.ascontiguousarray(_images(x).transpose(0, 3, 1, 2))


def predict_torch(module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a PyTorch module on NHWC images (transposed to NCHW for PyTorch)."""
    torch = _torch()
    x, step = _nchw(x), _validate.positive_int(batch_size, "batch_size")
    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(x[i:i + step])).numpy()
                               for i in range(0, len(x), step)])


def latency_torch_ms(module, input_shape=(28, 28, 1), runs: int = 200,
                     warmup: int = 20) -> float:
    """Median batch-1 latency in milliseconds of a PyTorch module in eager mode (1 thread)."""
    torch = _torch()
    torch.set_num_threads(1)
    sample = torch.zeros((1, input_shape[2], input_shape[0], input_shape[1]))

    def call():
        with torch.inference_mode():
            module(sample)
    return measure.median_ms(call, runs, warmup)


def quantize_torch_dynamic(module):
    """PyTorch's dynamic int8 quantization of the ``Linear`` layers (a quantized copy).

    ``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao; it still
    runs in PyTorch 2.13 and is what PyTorch Mobile deployed.
    """
    import copy
    import warnings

    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def torch_bytes(module) -> int:
    """Bytes of a module's ``state_dict`` as ``torch.save`` writes it."""
    import io

    torch = _torch()
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def to_torch_mobile(module, input_shape=(28, 28, 1)) -> bytes:
    """The PyTorch Mobile route: a TorchScript trace saved for the lite interpreter (``.ptl``).

    This is what Android and iOS apps loaded before ExecuTorch; PyTorch no longer supports
    it actively. (``optimize_for_mobile`` needs a PyTorch built with XNNPACK, which the CPU
    wheel used here is not, so the trace is saved as it is.)
    """
    import warnings

    torch = _torch()
    example = torch.zeros((1, input_shape[2], input_shape[0], input_shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
        return bytes(traced._save_to_buffer_for_lite_interpreter())


def load_torch_mobile(program: bytes):
    """Load ``.ptl`` bytes into PyTorch's lite interpreter (a callable module)."""
    import io

    _torch()
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(io.BytesIO(bytes(program)))


# ---------------------------------------------------------------------------- ExecuTorch
def to_executorch(module, input_shape=(28, 28, 1), xnnpack: bool = True) -> bytes:
    """Export a PyTorch module to an ExecuTorch program (``.pte`` bytes) for batch-1 input.

    ``torch.export`` captures the graph; ``to_edge_transform_and_lower`` turns it into
    ExecuTorch's edge dialect and hands the parts XNNPACK supports to that CPU backend.
    """
    torch = _torch()
    _require("executorch")
    from executorch.exir import to_edge_transform_and_lower

    example = (torch.zeros((1, input_shape[2], input_shape[0], input_shape[1])),)
    exported = torch.export.export(module, example)
    partitioners = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner)
        partitioners = [XnnpackPartitioner()]
    return to_edge_transform_and_lower(exported, partitioner=partitioners).to_executorch().buffer


def cached_executorch(module, key: str, input_shape=(28, 28, 1), xnnpack: bool = True) -> bytes:
    """:func:`to_executorch`, exported once and kept in the model cache under ``key``.

    Exporting with the XNNPACK partitioner takes tens of seconds on 2 busy cores; the
    program's bytes are stored with ``helpers.cache.cached_arrays``.
    """
    arrays = cache.cached_arrays(f"{key}-{'xnnpack' if xnnpack else 'portable'}", lambda: {
        "pte": np.frombuffer(to_executorch(module, input_shape, xnnpack), np.uint8)})
    return arrays["pte"].tobytes()


def _executorch_method(program: bytes):
    _require("executorch")
    from executorch.runtime import Runtime

    method, error, _ = captured_output(  # the runtime prints CPU probing lines from C++
        lambda: Runtime.get().load_program(bytes(program)).load_method("forward"))
    if error is not None:
        raise ValueError(f"not a valid ExecuTorch program ({len(program)} bytes): "
                         f"{error}") from None
    return method


def predict_executorch(program: bytes, x: np.ndarray) -> np.ndarray:
    """Logits of an ExecuTorch program on NHWC images, one image at a time (batch 1)."""
    torch, method = _torch(), _executorch_method(program)
    return np.concatenate([method.execute([torch.from_numpy(image[None])])[0].numpy()
                           for image in _nchw(x)])


def latency_executorch_ms(program: bytes, input_shape=(28, 28, 1), runs: int = 200,
                          warmup: int = 20) -> float:
    """Median batch-1 latency in milliseconds of an ExecuTorch program."""
    torch, method = _torch(), _executorch_method(program)
    sample = [torch.zeros((1, input_shape[2], input_shape[0], input_shape[1]))]
    return measure.median_ms(lambda: method.execute(sample), runs, warmup)


# ---------------------------------------------------------------------------- explorer
def runtime_explorer(table, baseline: str | None = None, prerender: bool = False):
    """Pick a deployment: a slider over the rows of a runtime table (bytes, accuracy, latency).

    ``table`` is a ``DataFrame`` indexed by the deployment's name with columns ``KB``,
    ``latency ms`` and ``accuracy %``; the chosen row is circled on a bytes-against-latency
    plot of all of them, with its accuracy against ``baseline`` (default: the first row).
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame) or table.empty or not {
            "KB", "latency ms", "accuracy %"} <= set(table.columns):
        raise ValueError("table must be a non-empty DataFrame with columns 'KB', "
                         "'latency ms' and 'accuracy %' (see the other_runtimes notebook)")
    base = table.iloc[0] if baseline is None else table.loc[baseline]

    def setup(figure):
        ax = figure.add_subplot(1, 1, 1)
        plots.new_axes("Deployments: file size against batch-1 latency", "latency (ms)",
                       "file (KB)", ax=ax)
        ax.scatter(table["latency ms"], table["KB"], color=plots.COLORS["edge"])
        for name, row in table.iterrows():
            ax.annotate(name, (row["latency ms"], row["KB"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xlim(0, table["latency ms"].max() * 1.3)
        ax.set_ylim(0, table["KB"].max() * 1.2)

    def draw(name, row, figure):
        figure.axes[0].scatter([row["latency ms"]], [row["KB"]], s=300, facecolors="none",
                               edgecolors=plots.COLORS["accent"], linewidths=2)
        return (f"<b>{name}</b>: {row['KB']:.1f} KB, {row['latency ms']:.3f} ms, "
                f"accuracy {row['accuracy %']:.1f} % "
                f"({row['accuracy %'] - base['accuracy %']:+.1f} points)")

    return widgets.sweep_explorer(table, list(table.index), draw, setup, "deployment",
                                  prerender=prerender)


def deployment_row(runtime: str, program_bytes: int, logits: np.ndarray, labels: np.ndarray,
                   latency_ms: float) -> dict:
    """One row of the runtime table: file KB, accuracy % with its standard error, latency."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(logits) != len(labels):
        raise ValueError(f"logits and labels must have the same length, got {len(logits)} "
                         f"and {len(labels)}")
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == labels))
    return {"runtime": runtime, "KB": program_bytes / 1024, "accuracy %": 100 * accuracy,
            "± SE": 100 * measure.standard_error(accuracy, len(labels)),
            "latency ms": float(latency_ms)}

"""TinyML deployment: from a TFLite flatbuffer to a microcontroller (``deeper/tinyml_deployment``).

A microcontroller stores the model in **flash** (read-only, next to the program) and keeps
every activation in one static block of **SRAM**, the *tensor arena*. TensorFlow Lite Micro
(TFLM) is the runtime: no operating system, no ``malloc``, and only the operators whose
kernels were compiled in. This module measures those three constraints for real:

* :func:`export_c` writes ``model_data.h`` / ``model_data.cc``: the flatbuffer as an aligned
  ``const unsigned char`` array (flash) ready for ``tflite::GetModel``;
* :func:`arena_size` finds the smallest tensor arena TFLM can allocate, by bisection on the
  real TFLM interpreter (``tflite-micro``'s Python runtime), and :func:`arena_breakdown`
  splits it into activations and bookkeeping;
* :func:`predict_tflm` runs a model through TFLM and :func:`compare_runtimes` checks that it
  agrees with LiteRT (the phone/desktop runtime);
* :func:`check_ops` lists the model's operators and asks the installed TFLM, op by op,
  whether it has a kernel for each (see :func:`tflm_has_kernel`);
* :func:`fit_table` says which boards of ``helpers.data.edge_boards()`` the model fits, and by
  what margin, after stated allowances for the runtime and the application.

The package is split by concern and re-exports every public name here: ``export`` (C
arrays, activation memory), ``ops`` (operators and TFLM kernels), ``micro`` (arena, runs,
:class:`MicroReport`) and ``boards`` (the fit table). The command line lives with the
course tooling: ``python -m helpers.course.tinyml MODEL.tflite [--out DIR] [--board NAME]``.

Used by ``lessons/deeper/tinyml_deployment.ipynb`` and ``solutions/lab4_tinyml.ipynb``.
"""
from helpers.tinyml.boards import FLASH_ALLOWANCE_KB, SRAM_ALLOWANCE_KB, find_board, fit_table
from helpers.tinyml.export import activation_table, c_source, export_c
from helpers.tinyml.micro import (ARENA_LIMIT, MicroReport, arena_breakdown, arena_size,
                                  compare_runtimes, evaluate_micro, predict_tflm,
                                  tflm_interpreter)
from helpers.tinyml.ops import (ARENA_FLOOR, Operator, builtin_ops, check_ops, model_ops,
                                tflm_has_kernel, tflm_kernels, unsupported_ops)

__all__ = [
    "activation_table", "c_source", "export_c",
    "Operator", "model_ops", "tflm_has_kernel", "builtin_ops", "tflm_kernels", "check_ops",
    "unsupported_ops",
    "ARENA_FLOOR", "ARENA_LIMIT", "tflm_interpreter", "arena_size", "arena_breakdown",
    "predict_tflm", "compare_runtimes", "MicroReport", "evaluate_micro",
    "FLASH_ALLOWANCE_KB", "SRAM_ALLOWANCE_KB", "fit_table", "find_board",
]

"""Run notebook cells in a fresh, limited IPython kernel (the autograder's engine).

``run_cells`` starts a kernel on this interpreter (whatever kernel the notebook names), runs
the cells one by one, continuing after errors, under a time limit per notebook and per cell
and an optional memory limit (the kernel's address space, ``RLIMIT_AS``), stores at most
``OUTPUT_LIMIT_BYTES`` of outputs, and always shuts the kernel down. Under ``grade_many`` the
kernel is a fork of its server, with TensorFlow already imported (``forkserver``). The kernel
inherits the grader's environment, so ``EDGE_AI_CACHE`` (and the trained models in it) is
shared.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from helpers.course import forkserver
from helpers.course.labs import first_line

__all__ = ["OUTPUT_LIMIT_BYTES", "run_cells"]

OUTPUT_LIMIT_BYTES = 1_000_000  # outputs a submission may store; the rest is dropped


# Run IPython's kernel with an address-space limit (RLIMIT_AS): allocations past it fail
# (MemoryError, or the kernel dies) in that kernel only.
_LIMITED_KERNEL = (
    "import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
    "runpy.run_module('ipykernel_launcher', run_name='__main__', alter_sys=True)")


class _CurrentPythonKernels(KernelSpecManager):
    """Every kernel name resolves to IPython on this interpreter, optionally memory-limited."""

    memory_mb: float | None = None

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        launch = ["-m", "ipykernel_launcher"]
        if self.memory_mb is not None:
            launch = ["-c", _LIMITED_KERNEL, str(int(self.memory_mb * 2**20))]
        argv = [*launch, "-f", "{connection_file}"]
        if self.memory_mb is None or self.memory_mb >= forkserver.MIN_MEMORY_MB:
            argv = forkserver.python_argv(argv)
        else:  # a fork would start over the limit: its preloaded libraries count
            argv = [sys.executable, *argv]
        return KernelSpec(argv=argv, display_name="Python 3", language="python",
                          resource_dir="")


class _CappedClient(NotebookClient):
    """A NotebookClient that stores at most ``output_limit`` bytes of outputs in all."""

    output_limit: int = OUTPUT_LIMIT_BYTES
    stored: int = 0
    dropped: int = 0

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        if self.stored + size > self.output_limit:
            self.dropped += size
            return None
        self.stored += size
        return super().output(outs, msg, display_id, cell_index)


def run_cells(cells: list, workdir: str, timeout: float, cell_timeout: float | None,
              memory_mb: float | None, notes: list[str]) -> tuple[dict[int, str], int | None, str]:
    """Run cells one by one in a fresh kernel, continuing after errors.

    Args:
        cells: nbformat cells to run, in order.
        workdir: The kernel's working directory (also holds its sockets).
        timeout: Time limit for all cells, in seconds (kernel start-up not included).
        cell_timeout: Optional time limit for any single cell, in seconds.
        memory_mb: Optional limit on the kernel's address space, in MB.
        notes: List to which notes (outputs dropped) are appended.

    Returns:
        The first error line of each cell that raised (by index), the index of the first
        cell that did not finish (None if all ran) and why.
    """
    notebook = nbformat.v4.new_notebook(cells=cells)
    quiet = logging.getLogger("helpers.course.grading.nbclient")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    errors: dict[int, str] = {}
    over_memory = f" (memory limit {memory_mb:g} MB)" if memory_mb else ""

    def on_error(cell: dict, cell_index: int, execute_reply: dict) -> None:
        content = execute_reply.get("content", {})
        ename, evalue = content.get("ename", "Error"), first_line(content.get("evalue", ""))
        errors[cell_index] = (f"{ename}: {evalue}" if evalue else ename) + (
            over_memory if ename == "MemoryError" else "")

    kernels = _CurrentPythonKernels()
    kernels.memory_mb = memory_mb
    socket = str(Path(workdir) / "kernel")  # Unix sockets: no open TCP ports, no warning
    ipc = os.name == "posix" and len(socket) < 90  # socket paths are limited to ~100 bytes
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=kernels,
                                 **({"transport": "ipc", "ip": socket} if ipc else {}))
    client = _CappedClient(notebook, km=manager, allow_errors=True, shutdown_kernel="immediate",
                           resources={"metadata": {"path": workdir}}, on_cell_error=on_error,
                           log=quiet)
    index, stopped, why = 0, None, ""
    try:
        # the kernel's own stdout/stderr (C-level logs) would drown the report
        with client.setup_kernel(cleanup_kc=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL):
            deadline = time.monotonic() + timeout
            for index, cell in enumerate(notebook.cells):
                remaining = deadline - time.monotonic()
                limit = min(remaining, cell_timeout or remaining)
                if remaining <= 0:
                    stopped, why = index, f"timed out (notebook time limit {timeout:g} s)"
                    break
                client.timeout = max(1, math.ceil(limit))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    which, budget = (("cell", cell_timeout) if limit == cell_timeout
                                     else ("notebook", timeout))
                    stopped, why = index, f"timed out ({which} time limit {budget:g} s)"
                    break
                except DeadKernelError:
                    cause = (f"went over the memory limit of {memory_mb:g} MB" if memory_mb
                             else "ran out of memory")
                    stopped, why = index, f"kernel died (crashed, exited or {cause})"
                    break
            else:
                index = len(notebook.cells)
    except Exception as error:  # the kernel failed to start, or to stop
        if stopped is None and index < len(notebook.cells):
            stopped, why = index, (f"kernel error: {type(error).__name__}: "
                                   f"{first_line(error)}")
    if client.dropped:
        notes.append(f"outputs over {client.output_limit:,} bytes were not stored "
                     f"({client.dropped:,} bytes dropped)")
    return errors, stopped, why

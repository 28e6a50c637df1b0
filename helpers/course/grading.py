"""The autograder: run submissions in fresh kernels, with the instructor's tests, in parallel.

``grade`` runs one submission in a fresh kernel under a time limit, a memory limit and a cap
on stored output, with the instructor's version of every test cell (hidden tests included),
and scores each test cell: full points when the cell runs without an exception, 0 otherwise.
Written answers (``grade: true, solution: true`` or ``task: true``) are listed as needing
manual grading; their points are not in ``score``. Test cells and locked cells always run in
the lab's version, matched by ``grade_id``, so students cannot weaken, delete or reorder them.

``grade_many`` grades many submissions at once, each in its own worker process and kernel,
both forked from a server that has imported TensorFlow once (``helpers.course.forkserver``).
The command line is ``python -m helpers.course grade`` (``helpers.course.cli``).
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from helpers.course import forkserver, kernel, labs
from helpers.course.labs import check_labs, generate_labs
from helpers.course.report import CSV_COLUMNS, format_result

# the labs and report names re-exported here are the ones a grading script needs
__all__ = ["GradedCell", "GradeResult", "check_limit", "find_source", "unknown_lab", "grade",
           "default_jobs", "default_memory_mb", "grade_many", "generate_labs", "check_labs",
           "format_result", "CSV_COLUMNS"]

_WORKER_MARGIN_S = 120  # a worker's wall-clock allowance beyond the notebook's time limit


@dataclass
class GradedCell:
    """The outcome of one graded cell of a submission.

    Attributes:
        grade_id: The cell's nbgrader ``grade_id``.
        kind: ``"auto"`` (a test cell) or ``"manual"`` (a written answer).
        points: Points earned (always 0 for manual cells until a person grades them).
        max_points: Points the cell is worth.
        status: ``"passed"``, ``"failed"``, ``"manual"`` or ``"error"`` (not run).
        reason: Why, e.g. ``"NameError: name 'square' is not defined"`` or ``"timed out"``.
    """

    grade_id: str
    kind: str
    points: float
    max_points: float
    status: str
    reason: str = ""


@dataclass
class GradeResult:
    """The grade of one submission: one row per graded cell plus notes.

    Attributes:
        submission: The submitted file (never modified).
        lab: Name of the matching lab (``"lab1_pruning"``), ``""`` when none matched.
        cells: One ``GradedCell`` per graded cell of the lab, in notebook order.
        notes: What the grader noticed (re-inserted or reordered cells, errors in answers).
        error: Why the submission as a whole could not be graded, ``""`` otherwise.
    """

    submission: Path
    lab: str = ""
    cells: list[GradedCell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def score(self) -> float:
        """Points earned on the automatically graded test cells."""
        return sum(cell.points for cell in self.cells if cell.kind == "auto")

    @property
    def max_score(self) -> float:
        """Points available on the automatically graded test cells."""
        return sum(cell.max_points for cell in self.cells if cell.kind == "auto")

    @property
    def needs_manual(self) -> list[GradedCell]:
        """Written answers a person still has to grade."""
        return [cell for cell in self.cells if cell.status == "manual"]


def check_limit(name: str, value: float | None, unit: str = "seconds") -> None:
    """ValueError unless ``value`` is None or a finite number > 0."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0 < value < math.inf:
        shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{name} must be > 0 {unit}, got {shown}")


def find_source(name: str, solutions_dir: Path) -> Path | None:
    """The solutions notebook a submission belongs to, by file name.

    ``lab1_pruning.ipynb`` matches ``solutions/lab1_pruning.ipynb``; failing an exact
    match, the longest lab name contained in the submission's name wins
    (``alice_lab1_pruning.ipynb``).
    """
    sources = {path.stem: path for path in labs.solution_notebooks(solutions_dir)}
    stem = Path(name).stem
    if stem in sources:
        return sources[stem]
    contained = [lab for lab in sources if lab in stem]
    return sources[max(contained, key=len)] if contained else None


def _runnable(cell: dict) -> nbformat.NotebookNode:
    """A fresh copy of a cell for execution (no outputs; non-code cells become markdown)."""
    metadata = copy.deepcopy(cell.get("metadata", {}))
    if cell.get("cell_type") == "code":
        return nbformat.v4.new_code_cell(source=cell["source"], metadata=metadata)
    return nbformat.v4.new_markdown_cell(source=cell["source"], metadata=metadata)


def _build_run(source_nb: nbformat.NotebookNode, student_nb: nbformat.NotebookNode,
               source_path: Path, notes: list[str]) -> tuple[list, dict[str, int]]:
    """The cells to execute, and the index each graded cell got among them.

    Student cells are kept, except that test and locked cells are replaced by the lab's
    version with hidden tests, deleted ones are re-inserted after their predecessor in the
    source, and graded cells run in source order, each followed by the student cells that
    followed it in the submission.
    """
    anchors = {labs.cell_grade_id(cell): (index, cell)
               for index, cell in enumerate(source_nb.cells) if labs.cell_kind(cell)}
    groups: dict[str | None, list] = {None: []}  # grade_id -> [that cell, cells after it]
    current: str | None = None
    for cell in student_nb.cells:
        grade_id = labs.cell_grade_id(cell)
        if grade_id in anchors and grade_id not in groups:
            current = grade_id
            groups[current] = []
        groups[current].append(cell)
    if [gid for gid in groups if gid] != [gid for gid in anchors if gid in groups]:
        notes.append("graded cells were out of order; ran them in the lab's order")
    cells, positions = list(groups[None]), {}
    for grade_id, (index, source_cell) in anchors.items():
        official = labs.cell_kind(source_cell) in ("auto", "locked")
        if grade_id not in groups:
            if not official:
                continue
            notes.append(f"graded cell {grade_id} was missing; re-inserted it from the lab")
            groups[grade_id] = [source_cell]
        head, *rest = groups[grade_id]
        if official:
            head = copy.deepcopy(source_cell)
            head["source"] = labs.cleared_source(source_cell, f"{source_path} cell {index}",
                                                 keep_hidden=True)[0]
        positions[grade_id] = len(cells)
        cells += [head, *rest]
    return [_runnable(cell) for cell in cells], positions


def _grade_into(result: GradeResult, solutions_dir: Path, timeout: float,
                cell_timeout: float | None, memory_mb: float | None) -> None:
    """Fill ``result`` in place (so that a grader bug still leaves the rows found so far)."""
    source_path = find_source(result.submission.name, solutions_dir)
    if source_path is None:
        result.error = unknown_lab(result.submission, solutions_dir)
        return
    result.lab = source_path.stem
    source_nb = labs.read_source(source_path)
    for cell in source_nb.cells:
        kind, points = labs.cell_kind(cell), labs.nbgrader_meta(cell).get("points", 0)
        if kind == "auto":
            result.cells.append(GradedCell(labs.cell_grade_id(cell), kind, 0, points, "error",
                                           "not run"))
        elif kind == "manual":
            result.cells.append(GradedCell(labs.cell_grade_id(cell), kind, 0, points, "manual"))
    try:
        if not result.submission.is_file():
            raise ValueError("file not found" if not result.submission.exists() else "not a file")
        student_nb = labs.parse_notebook(result.submission.read_bytes())
    except (OSError, ValueError) as error:
        result.error = f"cannot read submission: {error}"
        for row in result.cells:
            row.status, row.reason = "error", result.error
        return
    present = {labs.cell_grade_id(cell) for cell in student_nb.cells}
    for row in result.cells:
        if row.kind == "manual" and row.grade_id not in present:
            row.reason = "answer cell missing from the submission"
    cells, positions = _build_run(source_nb, student_nb, source_path, result.notes)
    with tempfile.TemporaryDirectory(prefix="grading-") as workdir:
        errors, stopped, why = kernel.run_cells(cells, workdir, timeout, cell_timeout, memory_mb,
                                        result.notes)
    if stopped is not None:
        names = {index: grade_id for grade_id, index in positions.items()}
        where = f"cell {stopped}" + (f" ({names[stopped]})" if stopped in names else "")
        killed = "; kernel killed" if why.startswith("timed out") else ""
        result.notes.append(f"run stopped at {where}: {why}{killed}")
    tests = {row.grade_id: row for row in result.cells if row.kind == "auto"}
    for grade_id, index in positions.items():
        if grade_id in tests:
            row = tests[grade_id]
            if index in errors:
                row.status, row.reason = "failed", errors[index]
            elif stopped is not None and index >= stopped:
                row.status = "error"
                row.reason = why if index == stopped else f"{why.split(' (')[0]} before it ran"
            else:
                row.points, row.status, row.reason = row.max_points, "passed", ""
        elif index in errors:
            result.notes.append(f"cell {grade_id} raised {errors[index]}")


def unknown_lab(submission: Path, solutions_dir: Path) -> str:
    """The reason a submission matches no lab, naming the labs there are."""
    known = ", ".join(path.stem for path in labs.solution_notebooks(solutions_dir)) or "none"
    return f"no lab named {submission.stem!r} in {solutions_dir} (labs: {known})"


def grade(submission_path: str | Path, solutions_dir: str | Path, timeout: float = 600.0,
          cell_timeout: float | None = None, memory_mb: float | None = None) -> GradeResult:
    """Grade one submitted notebook against its source notebook in ``solutions_dir``.

    The lab is found by file name (``lab1_pruning.ipynb`` -> ``solutions/lab1_pruning.ipynb``).
    The submission is read, never written; it runs in a fresh kernel on this Python (same
    environment variables, so ``EDGE_AI_CACHE`` and its trained models are shared), in a
    temporary directory, cell by cell, continuing after errors. Test cells are matched by
    ``grade_id`` and replaced by the instructor's version with hidden tests; deleted test or
    locked cells are re-inserted; graded cells run in the lab's order. On timeout the kernel
    is killed and the remaining tests score 0 ("timed out"); over the memory limit the
    allocation fails or the kernel dies, and the cells that did not run score 0 with that
    reason. At most ``kernel.OUTPUT_LIMIT_BYTES`` of outputs are kept in memory. A broken
    submission (not a notebook, syntax errors, exceptions, unknown lab name) scores 0 where
    due, with a reason.

    Args:
        submission_path: The student's notebook.
        solutions_dir: Directory of source notebooks (``solutions/``).
        timeout: Time limit for running the whole notebook, in seconds (kernel start-up
            not included).
        cell_timeout: Optional time limit for any single cell, in seconds.
        memory_mb: Optional limit on the kernel's address space, in MB.

    Returns:
        A ``GradeResult`` with one row per graded cell, ``score``/``max_score`` over the
        test cells, and ``needs_manual`` listing written answers to grade by hand.

    Raises:
        ValueError: If ``timeout``, ``cell_timeout`` or ``memory_mb`` is not > 0, or
            ``solutions_dir`` does not exist.

    Example:
        >>> grade("submissions/alice/lab1_pruning.ipynb", "solutions").score  # doctest: +SKIP
        7
    """
    check_limit("timeout", timeout)
    check_limit("cell_timeout", cell_timeout)
    check_limit("memory_mb", memory_mb, "MB")
    solutions_dir = Path(solutions_dir)
    labs.solution_notebooks(solutions_dir)
    result = GradeResult(submission=Path(submission_path))
    try:
        _grade_into(result, solutions_dir, timeout, cell_timeout, memory_mb)
    except Exception as error:  # a grader must score every submission, never crash
        result.error = f"grader error: {type(error).__name__}: {labs.first_line(error)}"
        for row in result.cells:
            if row.kind == "auto" and row.status != "passed":
                row.status, row.reason = "error", result.error
    return result


# ---------------------------------------------------------------- many submissions

def default_jobs() -> int:
    """Parallel gradings by default: the CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_memory_mb(jobs: int) -> int:
    """A fair share of RAM per kernel: 80 % of physical memory split over ``jobs``."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    return max(512, int(0.8 * total / max(jobs, 1)))


def _result_from_json(text: str) -> GradeResult:
    data = json.loads(text)
    cells = [GradedCell(**cell) for cell in data.pop("cells")]
    return GradeResult(submission=Path(data.pop("submission")), cells=cells, **data)


def _worker() -> None:
    """Entry point of a worker process: grade the JSON job on stdin, print the result."""
    job = json.loads(sys.stdin.read())
    result = grade(job["submission"], job["solutions"], job["timeout"], job["cell_timeout"],
                   job["memory_mb"])
    print(json.dumps({**asdict(result), "submission": str(result.submission)}))


class _Workers:
    """The running worker processes of one ``grade_many`` call, so that all can be stopped."""

    def __init__(self, jobs: int):
        self.lock, self.running, self.stopping = threading.Lock(), set(), False
        # one share of the cores per kernel: TensorFlow's thread pools would otherwise each
        # size themselves to every core and spin against each other
        threads = str(max(1, default_jobs() // jobs))
        self.env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
                    "OMP_NUM_THREADS": threads, **os.environ}

    def grade(self, submission: Path, solutions_dir: Path, timeout: float,
              cell_timeout: float | None, memory_mb: float | None) -> GradeResult:
        """``grade`` in a separate Python process, so one bad grading cannot stop the others."""
        job = {"submission": str(submission), "solutions": str(solutions_dir),
               "timeout": timeout, "cell_timeout": cell_timeout, "memory_mb": memory_mb}
        with self.lock:
            if self.stopping:
                return GradeResult(submission=submission, error="grading interrupted")
            worker = subprocess.Popen(
                forkserver.python_argv(
                    ["-c", "from helpers.course.grading import _worker; _worker()"],
                    self.env),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=self.env)
            self.running.add(worker)
        try:
            out, err = worker.communicate(json.dumps(job), timeout=timeout + _WORKER_MARGIN_S)
            if worker.returncode == 0:
                return _result_from_json(out.strip().splitlines()[-1])
            why = labs.first_line(err.strip().splitlines()[-1] if err.strip()
                                  else f"exit code {worker.returncode}")
        except subprocess.TimeoutExpired:  # its kernel exits with it (ipykernel's parent poller)
            worker.kill()
            worker.communicate()
            why = f"worker did not finish within {timeout + _WORKER_MARGIN_S:g} s"
        except (OSError, ValueError, KeyError, TypeError) as error:
            why = f"{type(error).__name__}: {labs.first_line(error)}"
        finally:
            with self.lock:
                self.running.discard(worker)
        return GradeResult(submission=submission, error=f"grader error: {why}")

    def stop(self) -> None:
        """Start no new worker and kill the running ones (their kernels exit with them)."""
        with self.lock:
            self.stopping = True
            for worker in self.running:
                worker.kill()


def grade_many(submissions: Sequence[str | Path], solutions_dir: str | Path,
               jobs: int | None = None, timeout: float = 600.0,
               cell_timeout: float | None = None, memory_mb: float | None = None,
               on_result: Callable[[GradeResult], None] | None = None) -> list[GradeResult]:
    """Grade submissions in parallel, each in its own worker process and kernel.

    Each kernel gets one share of the cores for TensorFlow's thread pools
    (``TF_NUM_INTRAOP_THREADS`` etc. = cores // jobs, unless already set), so parallel
    kernels do not spin against each other. Workers and kernels are forks of one
    ``forkserver`` started for the call, so none of them imports TensorFlow again.

    Args:
        submissions: The notebooks to grade.
        solutions_dir: Directory of source notebooks (``solutions/``).
        jobs: Gradings at once (default: ``default_jobs()``, the CPU cores).
        timeout: Time limit per notebook, in seconds.
        cell_timeout: Optional time limit per cell, in seconds.
        memory_mb: Memory limit per kernel in MB (default: ``default_memory_mb(jobs)``).
        on_result: Called with each result as soon as it is ready (in finishing order). If
            it raises, or the call is interrupted, every worker is stopped.

    Returns:
        One ``GradeResult`` per submission, in the order of ``submissions``.

    Raises:
        ValueError: If ``jobs`` is not a positive integer, a limit is not > 0 or
            ``solutions_dir`` does not exist.
    """
    jobs = default_jobs() if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    memory_mb = default_memory_mb(jobs) if memory_mb is None else memory_mb
    for name, value, unit in (("timeout", timeout, "seconds"),
                              ("cell_timeout", cell_timeout, "seconds"),
                              ("memory_mb", memory_mb, "MB")):
        check_limit(name, value, unit)
    solutions_dir = Path(solutions_dir)
    labs.solution_notebooks(solutions_dir)
    paths = [Path(path) for path in submissions]
    results: list[GradeResult | None] = [None] * len(paths)
    workers = _Workers(jobs)
    with forkserver.running(workers.env) as env, ThreadPoolExecutor(max_workers=jobs) as pool:
        workers.env = env  # the workers' environment, with the server's socket
        try:
            futures = {pool.submit(workers.grade, path, solutions_dir, timeout, cell_timeout,
                                   memory_mb): number for number, path in enumerate(paths)}
            for future in as_completed(futures):
                results[futures[future]] = result = future.result()
                if on_result is not None:
                    on_result(result)
        except BaseException:  # KeyboardInterrupt, or on_result failed: stop every worker
            workers.stop()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results

"""Graded labs: generate student labs from solutions, check them, and autograde submissions.

The source of truth for every graded lab is ``solutions/<lab>.ipynb``: a notebook with the
solutions and the hidden tests, marked up like an nbgrader source notebook (no nbgrader
dependency). This module turns it into the student version ``labs/<lab>.ipynb`` and grades
what students hand back:

* ``generate_labs`` replaces each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with
  ``raise NotImplementedError()`` (markdown: ``YOUR ANSWER HERE``), drops
  ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` and mark-scheme regions, and clears
  outputs, byte for byte the same on every run;
* ``check_labs`` reports labs that are missing, extra, out of date or leak solution text;
* ``grade`` runs a submission in a fresh kernel under a time limit, with the instructor's
  version of every test cell (hidden tests included), and scores each test cell.

Cells carry nbgrader's cell metadata (schema 3) under ``metadata.nbgrader``: ``grade``,
``grade_id``, ``points``, ``solution``, ``locked``, ``task``. Test cells
(``grade: true, solution: false``) are graded automatically: full points when the cell runs
without an exception, 0 otherwise. Written answers (``grade: true, solution: true`` or
``task: true``) are listed as needing manual grading; their points are not in ``score``.
Test cells and locked cells (``locked: true``) always run in the lab's version, matched by
``grade_id``, so students cannot weaken, delete or reorder them.

Used by ``solutions/*.ipynb`` and ``labs/*.ipynb`` (the graded labs), the lab-integrity and
grader tests, and teachers on the command line::

    python -m helpers.grading generate [--solutions DIR] [--labs DIR]
    python -m helpers.grading check [--solutions DIR] [--labs DIR]
    python -m helpers.grading grade SUBMISSION.ipynb... [--timeout S] [--csv FILE]
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import reader as nbformat_reader

__all__ = ["SOLUTION", "HIDDEN_TESTS", "MARK_SCHEME", "CODE_STUB", "ANSWER_STUB", "GradedCell",
           "GradeResult", "generate_labs", "check_labs", "grade", "format_result", "CSV_COLUMNS",
           "main"]

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MARK_SCHEME = ("=== BEGIN MARK SCHEME ===", "=== END MARK SCHEME ===")
CODE_STUB = "raise NotImplementedError()"
ANSWER_STUB = "YOUR ANSWER HERE"
_MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
                 "BEGIN MARK SCHEME", "END MARK SCHEME")
_REGENERATE = "run `python -m helpers.grading generate`"


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


# ---------------------------------------------------------------- reading notebooks

def _parse_notebook(data: bytes) -> nbformat.NotebookNode:
    """Parse notebook bytes leniently (no validation, no random cell ids); ValueError if bad."""
    if not data.strip():
        raise ValueError("empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not a notebook (not UTF-8 text)") from None
    try:
        json.loads(text)
    except ValueError as error:
        raise ValueError(f"not a notebook (invalid JSON: {_first_line(error)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = nbformat.convert(nbformat_reader.reads(text), 4)
    except Exception as error:  # nbformat raises many types on bad input
        raise ValueError(f"not a notebook ({type(error).__name__}: {_first_line(error)})")
    cells = notebook.get("cells")
    if not isinstance(cells, list) or not all(
            isinstance(cell, dict) and isinstance(cell.get("source"), str) for cell in cells):
        raise ValueError("not a notebook (its cells are malformed)")
    for cell in cells:
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = nbformat.NotebookNode()
    return notebook


def _nbgrader(cell: dict) -> dict:
    """The cell's nbgrader metadata, ``{}`` when absent or malformed."""
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _grade_id(cell: dict) -> str | None:
    """The cell's nbgrader ``grade_id`` if it is a non-empty string, else None."""
    grade_id = _nbgrader(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) and grade_id else None


def _kind(cell: dict) -> str | None:
    """``"auto"`` test, ``"manual"`` answer, ``"locked"``, ``"answer"`` (ungraded) or None."""
    meta = _nbgrader(cell)
    if meta.get("task") or (meta.get("grade") and meta.get("solution")):
        return "manual"
    if meta.get("grade"):
        return "auto"
    if meta.get("locked"):
        return "locked"
    return "answer" if meta.get("solution") else None


def _read_source(path: Path) -> nbformat.NotebookNode:
    """Read a solutions notebook and check its nbgrader metadata; ValueError if invalid."""
    try:
        notebook = _parse_notebook(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    seen: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        kind, grade_id = _kind(cell), _grade_id(cell)
        if kind is None:
            continue
        where = f"{path} cell {index}"
        if grade_id is None:
            raise ValueError(f"{where}: nbgrader cell has no grade_id")
        if grade_id in seen:
            raise ValueError(f"{where}: duplicate grade_id {grade_id!r}")
        seen.add(grade_id)
        points = _nbgrader(cell).get("points", 0)
        if kind in ("auto", "manual") and (not isinstance(points, (int, float)) or points < 0):
            raise ValueError(f"{where} ({grade_id}): points must be a number >= 0, "
                             f"got {points!r}")
        if kind == "auto" and cell.cell_type != "code":
            raise ValueError(f"{where} ({grade_id}): an autograded test cell must be code")
        _clear_cell(cell, where, keep_hidden=False)  # raises on unbalanced markers
    return notebook


# ---------------------------------------------------------------- generating labs

def _replace_regions(source: str, markers: tuple[str, str], stub: str | None,
                     where: str) -> tuple[str, list[str]]:
    """Replace each marked region (marker lines included) by ``stub`` or drop it.

    The stub keeps the indentation of the BEGIN line. Returns the new source and the
    lines that were inside the regions.
    """
    begin, end = markers
    kept: list[str] = []
    removed: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        if begin in line:
            if inside:
                raise ValueError(f"{where}: {begin!r} on line {number} inside another region")
            inside = True
            if stub is not None:
                kept.append(line[: len(line) - len(line.lstrip())] + stub)
        elif end in line:
            if not inside:
                raise ValueError(f"{where}: {end!r} on line {number} without {begin!r}")
            inside = False
        elif inside:
            removed.append(line)
        else:
            kept.append(line)
    if inside:
        raise ValueError(f"{where}: {begin!r} is never closed by {end!r}")
    return "\n".join(kept), removed


def _clear_cell(cell: dict, where: str, keep_hidden: bool) -> tuple[str, list[str]]:
    """The cell source students see (with ``keep_hidden``: the one the grader runs).

    Returns the source and the protected lines it removed. A solution cell without
    markers is replaced as a whole, as nbgrader does.
    """
    source = cell["source"]
    stub = CODE_STUB if cell.get("cell_type") == "code" else ANSWER_STUB
    if _nbgrader(cell).get("solution") and not any(m in source for m in SOLUTION):
        return stub, source.splitlines()
    source, protected = _replace_regions(source, SOLUTION, stub, where)
    source, scheme = _replace_regions(source, MARK_SCHEME, None, where)
    protected += scheme
    if not keep_hidden:
        source, hidden = _replace_regions(source, HIDDEN_TESTS, None, where)
        protected += hidden
    return source, protected


def _lab_notebook(path: Path) -> nbformat.NotebookNode:
    """The student version of a solutions notebook: regions cleared, no outputs."""
    lab = _read_source(path)
    for index, cell in enumerate(lab.cells):
        cell["source"] = _clear_cell(cell, f"{path} cell {index}", keep_hidden=False)[0]
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if lab.nbformat_minor >= 5 and not cell.get("id"):
            cell["id"] = f"cell-{index}"  # deterministic, unlike nbformat's random ids
    return lab


def _lab_bytes(lab: nbformat.NotebookNode) -> bytes:
    """The exact bytes ``generate_labs`` writes for a lab notebook."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = nbformat.writes(lab)
    return (text.rstrip("\n") + "\n").encode("utf-8")


def _solution_notebooks(solutions_dir: Path) -> list[Path]:
    """The ``*.ipynb`` files of a solutions directory, sorted; ValueError if it is missing."""
    if not solutions_dir.is_dir():
        raise ValueError(f"solutions_dir must be an existing directory, got {solutions_dir}")
    return sorted(solutions_dir.glob("*.ipynb"))


def generate_labs(solutions_dir: str | Path, labs_dir: str | Path) -> list[Path]:
    """Write the student version of every solutions notebook into ``labs_dir``.

    Output is deterministic (same bytes on every run); files whose bytes would not change
    are left untouched. Labs with no source in ``solutions_dir`` are not deleted;
    ``check_labs`` reports them.

    Args:
        solutions_dir: Directory of source notebooks (``solutions/``).
        labs_dir: Directory for the student notebooks (``labs/``), created if needed.

    Returns:
        The lab paths, one per solutions notebook, sorted by name.

    Raises:
        ValueError: If ``solutions_dir`` does not exist or a source notebook is invalid
            (unreadable, unbalanced markers, missing or duplicate ``grade_id``).

    Example:
        >>> generate_labs("solutions", "labs")  # doctest: +SKIP
        [PosixPath('labs/lab1_pruning.ipynb')]
    """
    solutions_dir, labs_dir = Path(solutions_dir), Path(labs_dir)
    sources = _solution_notebooks(solutions_dir)
    # build every lab before writing any, so an invalid source leaves labs/ untouched
    contents = {source.name: _lab_bytes(_lab_notebook(source)) for source in sources}
    labs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in contents.items():
        target = labs_dir / name
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
        written.append(target)
    return written


# ---------------------------------------------------------------- checking labs

def _first_difference(expected: nbformat.NotebookNode, actual_bytes: bytes) -> str:
    """A short description of where a lab differs from what generate would write."""
    try:
        actual = _parse_notebook(actual_bytes)
    except ValueError as error:
        return f" (it is {error})"
    if len(actual.cells) != len(expected.cells):
        return f" (it has {len(actual.cells)} cells, expected {len(expected.cells)})"
    for index, (want, got) in enumerate(zip(expected.cells, actual.cells)):
        for key in ("cell_type", "source", "outputs", "execution_count", "metadata"):
            if want.get(key) != got.get(key):
                return f" (cell {index}: {key} differs)"
    return " (notebook metadata or formatting differs)"


def _leaks(source_path: Path, lab_path: Path, lab_bytes: bytes,
           expected: nbformat.NotebookNode) -> list[str]:
    """Marker lines, or lines of solution / hidden-test regions, found in a lab.

    A protected line counts only if it appears nowhere in the generated lab (so a line
    like ``import numpy as np`` used both inside and outside a solution is not a leak).
    """
    source = _read_source(source_path)
    protected: set[str] = set()
    for index, cell in enumerate(source.cells):
        protected.update(line.strip() for line in
                         _clear_cell(cell, f"{source_path} cell {index}", keep_hidden=False)[1])
    public = {line.strip() for cell in expected.cells for line in cell.source.splitlines()}
    secret = {line for line in protected - public
              if len(line) > 2 and any(char.isalnum() for char in line)}
    try:
        parts = [(f"cell {index}", cell.source)
                 for index, cell in enumerate(_parse_notebook(lab_bytes).cells)]
    except ValueError:
        parts = [("file", lab_bytes.decode("utf-8", errors="replace"))]
    problems = []
    for where, text in parts:
        lines = [line.strip() for line in text.splitlines()]
        markers = sorted({word for line in lines for word in _MARKER_WORDS if word in line})
        if markers:
            problems.append(f"{lab_path} {where}: marker {markers[0]!r} leaked into the lab")
        leaked = [line for line in lines if line in secret]
        if leaked:
            problems.append(f"{lab_path} {where}: {len(leaked)} line(s) of a solution or "
                            f"hidden-test region leaked into the lab, e.g. {leaked[0]!r}")
    return problems


def check_labs(solutions_dir: str | Path, labs_dir: str | Path) -> list[str]:
    """Check that ``labs_dir`` is exactly what ``generate_labs`` would write, with no leaks.

    Args:
        solutions_dir: Directory of source notebooks (``solutions/``).
        labs_dir: Directory of student notebooks (``labs/``).

    Returns:
        One message per problem, naming the file and what is wrong (a missing, extra or
        out-of-date lab; a marker line or a line of a solution or hidden-test region found
        in a lab; an invalid source notebook). Empty when the labs are in sync.

    Raises:
        ValueError: If ``solutions_dir`` does not exist.
    """
    solutions_dir, labs_dir = Path(solutions_dir), Path(labs_dir)
    sources = _solution_notebooks(solutions_dir)
    problems = []
    for source in sources:
        lab = labs_dir / source.name
        try:
            expected = _lab_notebook(source)
            expected_bytes = _lab_bytes(expected)
        except ValueError as error:
            problems.append(f"{source}: invalid source notebook: {error}")
            continue
        if not lab.is_file():
            problems.append(f"{lab}: missing (the lab for {source}); {_REGENERATE}")
            continue
        actual = lab.read_bytes()
        if actual != expected_bytes:
            problems.append(f"{lab}: out of sync with {source}"
                            f"{_first_difference(expected, actual)}; {_REGENERATE}")
        problems += _leaks(source, lab, actual, expected)
    names = {source.name for source in sources}
    problems += [f"{lab}: extra lab with no source in {solutions_dir}; delete it or add "
                 f"{solutions_dir / lab.name}"
                 for lab in sorted(labs_dir.glob("*.ipynb")) if lab.name not in names]
    return problems


# ---------------------------------------------------------------- grading

class _CurrentPythonKernels(KernelSpecManager):
    """Every kernel name resolves to IPython on this interpreter (same venv as the grader)."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                "{connection_file}"],
                          display_name="Python 3", language="python", resource_dir="")


def _first_line(error: object, limit: int = 200) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _check_positive(name: str, value: float | None) -> None:
    """ValueError unless ``value`` is None or a finite number of seconds > 0."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0 < value < math.inf:
        shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{name} must be > 0 seconds, got {shown}")


def _find_source(name: str, solutions_dir: Path) -> Path | None:
    """The solutions notebook a submission belongs to, by file name.

    ``lab1_pruning.ipynb`` matches ``solutions/lab1_pruning.ipynb``; failing an exact
    match, the longest lab name contained in the submission's name wins
    (``alice_lab1_pruning.ipynb``).
    """
    sources = {path.stem: path for path in _solution_notebooks(solutions_dir)}
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
    anchors = {_grade_id(cell): (index, cell)
               for index, cell in enumerate(source_nb.cells) if _kind(cell)}
    groups: dict[str | None, list] = {None: []}  # grade_id -> [that cell, cells after it]
    current: str | None = None
    for cell in student_nb.cells:
        grade_id = _grade_id(cell)
        if grade_id in anchors and grade_id not in groups:
            current = grade_id
            groups[current] = []
        groups[current].append(cell)
    if [gid for gid in groups if gid] != [gid for gid in anchors if gid in groups]:
        notes.append("graded cells were out of order; ran them in the lab's order")
    cells, positions = list(groups[None]), {}
    for grade_id, (index, source_cell) in anchors.items():
        official = _kind(source_cell) in ("auto", "locked")
        if grade_id not in groups:
            if not official:
                continue
            notes.append(f"graded cell {grade_id} was missing; re-inserted it from the lab")
            groups[grade_id] = [source_cell]
        head, *rest = groups[grade_id]
        if official:
            head = copy.deepcopy(source_cell)
            head["source"] = _clear_cell(source_cell, f"{source_path} cell {index}",
                                         keep_hidden=True)[0]
        positions[grade_id] = len(cells)
        cells += [head, *rest]
    return [_runnable(cell) for cell in cells], positions


def _execute(cells: list, workdir: str, timeout: float,
             cell_timeout: float | None) -> tuple[dict[int, str], int | None, str]:
    """Run cells one by one in a fresh kernel, continuing after errors.

    Returns the first error line of each cell that raised, the index of the first cell
    that did not finish (None if all ran) and why.
    """
    notebook = nbformat.v4.new_notebook(cells=cells)
    quiet = logging.getLogger("helpers.grading.nbclient")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    errors: dict[int, str] = {}

    def on_error(cell: dict, cell_index: int, execute_reply: dict) -> None:
        content = execute_reply.get("content", {})
        ename, evalue = content.get("ename", "Error"), _first_line(content.get("evalue", ""))
        errors[cell_index] = f"{ename}: {evalue}" if evalue else ename

    socket = str(Path(workdir) / "kernel")  # Unix sockets: no open TCP ports, no warning
    ipc = os.name == "posix" and len(socket) < 90  # socket paths are limited to ~100 bytes
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_CurrentPythonKernels(),
                                 **({"transport": "ipc", "ip": socket} if ipc else {}))
    client = NotebookClient(notebook, km=manager, allow_errors=True, shutdown_kernel="immediate",
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
                    stopped, why = index, "kernel died (crashed, exited or ran out of memory)"
                    break
            else:
                index = len(notebook.cells)
    except Exception as error:  # the kernel failed to start, or to stop
        if stopped is None and index < len(notebook.cells):
            stopped, why = index, f"kernel error: {type(error).__name__}: {_first_line(error)}"
    return errors, stopped, why


def _grade_into(result: GradeResult, solutions_dir: Path, timeout: float,
                cell_timeout: float | None) -> None:
    """Fill ``result`` in place (so that a grader bug still leaves the rows found so far)."""
    source_path = _find_source(result.submission.name, solutions_dir)
    if source_path is None:
        known = ", ".join(path.stem for path in _solution_notebooks(solutions_dir)) or "none"
        result.error = f"no lab named {result.submission.stem!r} in {solutions_dir} (labs: {known})"
        return
    result.lab = source_path.stem
    source_nb = _read_source(source_path)
    for cell in source_nb.cells:
        kind, points = _kind(cell), _nbgrader(cell).get("points", 0)
        if kind == "auto":
            result.cells.append(GradedCell(_grade_id(cell), kind, 0, points, "error", "not run"))
        elif kind == "manual":
            result.cells.append(GradedCell(_grade_id(cell), kind, 0, points, "manual"))
    try:
        if not result.submission.is_file():
            raise ValueError("file not found" if not result.submission.exists() else "not a file")
        student_nb = _parse_notebook(result.submission.read_bytes())
    except (OSError, ValueError) as error:
        result.error = f"cannot read submission: {error}"
        for row in result.cells:
            row.status, row.reason = "error", result.error
        return
    present = {_grade_id(cell) for cell in student_nb.cells}
    for row in result.cells:
        if row.kind == "manual" and row.grade_id not in present:
            row.reason = "answer cell missing from the submission"
    cells, positions = _build_run(source_nb, student_nb, source_path, result.notes)
    with tempfile.TemporaryDirectory(prefix="grading-") as workdir:
        errors, stopped, why = _execute(cells, workdir, timeout, cell_timeout)
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


def grade(submission_path: str | Path, solutions_dir: str | Path, timeout: float = 600.0,
          cell_timeout: float | None = None) -> GradeResult:
    """Grade one submitted notebook against its source notebook in ``solutions_dir``.

    The lab is found by file name (``lab1_pruning.ipynb`` -> ``solutions/lab1_pruning.ipynb``).
    The submission is read, never written; it runs in a fresh kernel on this Python, in a
    temporary directory, cell by cell, continuing after errors. Test cells are matched by
    ``grade_id`` and replaced by the instructor's version with hidden tests; deleted test or
    locked cells are re-inserted; graded cells run in the lab's order. On timeout the kernel
    is killed and the remaining tests score 0 ("timed out"). A broken submission (not a
    notebook, syntax errors, exceptions, unknown lab name) scores 0 where due, with a reason.

    Args:
        submission_path: The student's notebook.
        solutions_dir: Directory of source notebooks (``solutions/``).
        timeout: Time limit for running the whole notebook, in seconds (kernel start-up
            not included).
        cell_timeout: Optional time limit for any single cell, in seconds.

    Returns:
        A ``GradeResult`` with one row per graded cell, ``score``/``max_score`` over the
        test cells, and ``needs_manual`` listing written answers to grade by hand.

    Raises:
        ValueError: If ``timeout`` or ``cell_timeout`` is not > 0, or ``solutions_dir`` does
            not exist.

    Example:
        >>> grade("submissions/alice/lab1_pruning.ipynb", "solutions").score  # doctest: +SKIP
        7
    """
    _check_positive("timeout", timeout)
    _check_positive("cell_timeout", cell_timeout)
    solutions_dir = Path(solutions_dir)
    _solution_notebooks(solutions_dir)
    result = GradeResult(submission=Path(submission_path))
    try:
        _grade_into(result, solutions_dir, timeout, cell_timeout)
    except Exception as error:  # a grader must score every submission, never crash
        result.error = f"grader error: {type(error).__name__}: {_first_line(error)}"
        for row in result.cells:
            if row.kind == "auto" and row.status != "passed":
                row.status, row.reason = "error", result.error
    return result


# ---------------------------------------------------------------- reports and CLI

def _number(value: float) -> str:
    return f"{value:g}"


def format_result(result: GradeResult) -> str:
    """The text report of one submission; its last line is ``score: X/Y``."""
    lines = [f"submission: {result.submission}", f"lab: {result.lab or '-'}"]
    lines += [f"note: {note}" for note in result.notes]
    width = max([len(row.grade_id) for row in result.cells] + [8])
    for row in result.cells:
        manual = row.status == "manual"
        earned = "?" if manual else _number(row.points)
        status = "needs manual grading" if manual else row.status
        lines.append(f"  {row.grade_id:<{width}} {earned:>3}/{_number(row.max_points):<3} "
                     f"{status}{': ' + row.reason if row.reason else ''}")
    if result.error:
        lines.append(f"error: {result.error}")
    manual_points = sum(row.max_points for row in result.needs_manual)
    if manual_points:
        lines.append(f"manual: {_number(manual_points)} more point(s) to grade by hand")
    lines.append(f"score: {_number(result.score)}/{_number(result.max_score)}")
    return "\n".join(lines)


CSV_COLUMNS = ["submission", "lab", "grade_id", "points", "max_points", "status", "reason"]


def _csv_rows(result: GradeResult) -> list[list[str]]:
    """One CSV row per graded cell plus a TOTAL row (manual cells have empty points)."""
    rows = [[str(result.submission), result.lab, row.grade_id,
             "" if row.status == "manual" else _number(row.points),
             _number(row.max_points), row.status, row.reason] for row in result.cells]
    manual_points = sum(row.max_points for row in result.needs_manual)
    reasons = [result.error] + [note for note in result.notes if note.startswith("run stopped")]
    if manual_points:
        reasons.append(f"{_number(manual_points)} point(s) need manual grading")
    rows.append([str(result.submission), result.lab, "TOTAL", _number(result.score),
                 _number(result.max_score), "error" if result.error else "total",
                 "; ".join(reason for reason in reasons if reason)])
    return rows


def _default_root() -> Path:
    """The repository: the current directory if it has ``solutions/``, else the package's."""
    cwd = Path.cwd()
    return cwd if (cwd / "solutions").is_dir() else Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Command line: ``generate``, ``check`` or ``grade``; returns the exit code.

    Exit codes: 0 success (``grade``: grading ran, whatever the scores), 1 labs out of
    sync or an invalid source notebook, 2 usage error.
    """
    root = _default_root()
    parser = argparse.ArgumentParser(prog="python -m helpers.grading",
                                     description="Generate, check and grade the graded labs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("generate", "write labs/ from solutions/"),
                       ("check", "exit 1 if labs/ is out of sync with solutions/ or leaks")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--solutions", type=Path, default=root / "solutions")
        command.add_argument("--labs", type=Path, default=root / "labs")
    command = commands.add_parser("grade", help="grade submitted notebooks")
    command.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION.ipynb")
    command.add_argument("--solutions", type=Path, default=root / "solutions")
    command.add_argument("--timeout", type=float, default=600.0,
                         help="time limit per notebook in seconds (default 600)")
    command.add_argument("--cell-timeout", type=float, default=None,
                         help="time limit per cell in seconds (default: none)")
    command.add_argument("--csv", type=Path, default=None, help="write the score table here")
    args = parser.parse_args(argv)

    if not args.solutions.is_dir():
        print(f"error: solutions directory not found: {args.solutions}", file=sys.stderr)
        return 2
    try:
        if args.command == "generate":
            for path in generate_labs(args.solutions, args.labs):
                print(f"wrote {path}")
            return 0
        if args.command == "check":
            problems = check_labs(args.solutions, args.labs)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print(f"labs out of sync: {len(problems)} problem(s)", file=sys.stderr)
                return 1
            print("labs in sync")
            return 0
    except ValueError as error:  # an invalid source notebook
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        _check_positive("timeout", args.timeout)
        _check_positive("cell_timeout", args.cell_timeout)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    table = None
    if args.csv is not None:
        try:
            table = args.csv.open("w", newline="", encoding="utf-8")
        except OSError as error:
            print(f"error: cannot write {args.csv}: {error}", file=sys.stderr)
            return 2
    try:
        writer = csv.writer(table) if table else None
        if writer:
            writer.writerow(CSV_COLUMNS)
        for number, submission in enumerate(args.submissions):
            result = grade(submission, args.solutions, args.timeout, args.cell_timeout)
            print(("\n" if number else "") + format_result(result), flush=True)
            if writer:
                writer.writerows(_csv_rows(result))
                table.flush()
    finally:
        if table:
            table.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Graded labs: read nbgrader-style source notebooks, generate student labs, check them.

The source of truth for every graded lab is ``solutions/<lab>.ipynb``: a notebook with the
solutions and the hidden tests, marked up like an nbgrader source notebook (no nbgrader
dependency). This module turns it into the student version ``labs/<lab>.ipynb``:

* ``generate_labs`` replaces each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with
  ``raise NotImplementedError()`` (markdown: ``YOUR ANSWER HERE``), drops
  ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` and mark-scheme regions, and clears
  outputs, byte for byte the same on every run;
* ``check_labs`` reports labs that are missing, extra, out of date or leak solution text.

Cells carry nbgrader's cell metadata (schema 3) under ``metadata.nbgrader``: ``grade``,
``grade_id``, ``points``, ``solution``, ``locked``, ``task``. The reading functions here
(``parse_notebook``, ``cell_kind``, ``read_source``, ``cleared_source``) are shared with the
autograder (``helpers.course.grading``). On the command line::

    python -m helpers.course generate [--solutions DIR] [--labs DIR]
    python -m helpers.course check [--solutions DIR] [--labs DIR]
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import nbformat
from nbformat import reader as nbformat_reader

from helpers import cache

__all__ = ["SOLUTION", "HIDDEN_TESTS", "MARK_SCHEME", "CODE_STUB", "ANSWER_STUB",
           "parse_notebook", "nbgrader_meta", "cell_grade_id", "cell_kind", "read_source",
           "cleared_source", "solution_notebooks", "first_line", "generate_labs", "check_labs"]

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MARK_SCHEME = ("=== BEGIN MARK SCHEME ===", "=== END MARK SCHEME ===")
CODE_STUB = "raise NotImplementedError()"
ANSWER_STUB = "YOUR ANSWER HERE"
_MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
                 "BEGIN MARK SCHEME", "END MARK SCHEME")
_REGENERATE = "run `python -m helpers.course generate`"


def first_line(error: object, limit: int = 200) -> str:
    """The first line of ``str(error)``, at most ``limit`` characters (``""`` if empty)."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


# ---------------------------------------------------------------- reading notebooks

def parse_notebook(data: bytes) -> nbformat.NotebookNode:
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
        raise ValueError(f"not a notebook (invalid JSON: {first_line(error)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = nbformat.convert(nbformat_reader.reads(text), 4)
    except Exception as error:  # nbformat raises many types on bad input
        raise ValueError(f"not a notebook ({type(error).__name__}: {first_line(error)})")
    cells = notebook.get("cells")
    if not isinstance(cells, list) or not all(
            isinstance(cell, dict) and isinstance(cell.get("source"), str) for cell in cells):
        raise ValueError("not a notebook (its cells are malformed)")
    for cell in cells:
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = nbformat.NotebookNode()
    return notebook


def nbgrader_meta(cell: dict) -> dict:
    """The cell's nbgrader metadata, ``{}`` when absent or malformed."""
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def cell_grade_id(cell: dict) -> str | None:
    """The cell's nbgrader ``grade_id`` if it is a non-empty string, else None."""
    grade_id = nbgrader_meta(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) and grade_id else None


def cell_kind(cell: dict) -> str | None:
    """``"auto"`` test, ``"manual"`` answer, ``"locked"``, ``"answer"`` (ungraded) or None."""
    meta = nbgrader_meta(cell)
    if meta.get("task") or (meta.get("grade") and meta.get("solution")):
        return "manual"
    if meta.get("grade"):
        return "auto"
    if meta.get("locked"):
        return "locked"
    return "answer" if meta.get("solution") else None


def read_source(path: Path) -> nbformat.NotebookNode:
    """Read a solutions notebook and check its nbgrader metadata; ValueError if invalid."""
    try:
        notebook = parse_notebook(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    seen: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        kind, grade_id = cell_kind(cell), cell_grade_id(cell)
        if kind is None:
            continue
        where = f"{path} cell {index}"
        if grade_id is None:
            raise ValueError(f"{where}: nbgrader cell has no grade_id")
        if grade_id in seen:
            raise ValueError(f"{where}: duplicate grade_id {grade_id!r}")
        seen.add(grade_id)
        points = nbgrader_meta(cell).get("points", 0)
        if kind in ("auto", "manual") and (not isinstance(points, (int, float)) or points < 0):
            raise ValueError(f"{where} ({grade_id}): points must be a number >= 0, "
                             f"got {points!r}")
        if kind == "auto" and cell.cell_type != "code":
            raise ValueError(f"{where} ({grade_id}): an autograded test cell must be code")
        cleared_source(cell, where, keep_hidden=False)  # raises on unbalanced markers
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


def cleared_source(cell: dict, where: str, keep_hidden: bool) -> tuple[str, list[str]]:
    """The cell source students see (with ``keep_hidden``: the one the grader runs).

    Returns the source and the protected lines it removed. A solution cell without
    markers is replaced as a whole, as nbgrader does.
    """
    source = cell["source"]
    stub = CODE_STUB if cell.get("cell_type") == "code" else ANSWER_STUB
    if nbgrader_meta(cell).get("solution") and not any(m in source for m in SOLUTION):
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
    lab = read_source(path)
    for index, cell in enumerate(lab.cells):
        cell["source"] = cleared_source(cell, f"{path} cell {index}", keep_hidden=False)[0]
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


def solution_notebooks(solutions_dir: Path) -> list[Path]:
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
    sources = solution_notebooks(solutions_dir)
    # build every lab before writing any, so an invalid source leaves labs/ untouched
    contents = {source.name: _lab_bytes(_lab_notebook(source)) for source in sources}
    labs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in contents.items():
        target = labs_dir / name
        if not target.is_file() or target.read_bytes() != data:
            cache.atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
        written.append(target)
    return written


# ---------------------------------------------------------------- checking labs

def _first_difference(expected: nbformat.NotebookNode, actual_bytes: bytes) -> str:
    """A short description of where a lab differs from what generate would write."""
    try:
        actual = parse_notebook(actual_bytes)
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
    source = read_source(source_path)
    protected: set[str] = set()
    for index, cell in enumerate(source.cells):
        protected.update(line.strip() for line in
                         cleared_source(cell, f"{source_path} cell {index}", keep_hidden=False)[1])
    public = {line.strip() for cell in expected.cells for line in cell.source.splitlines()}
    secret = {line for line in protected - public
              if len(line) > 2 and any(char.isalnum() for char in line)}
    try:
        parts = [(f"cell {index}", cell.source)
                 for index, cell in enumerate(parse_notebook(lab_bytes).cells)]
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
    sources = solution_notebooks(solutions_dir)
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



"""The autograder: run submissions in fresh kernels, with the instructor's tests, in parallel.

``grade`` runs one submission in a fresh kernel under a time limit, a memory limit and a cap
on stored output, with the instructor's version of every test cell (hidden tests included),
and scores each test cell: full points when the cell runs without an exception, 0 otherwise.
Written answers (``grade: true, solution: true`` or ``task: true``) are listed as needing
manual grading; their points are not in ``score``. Test cells and locked cells always run in
the lab's version, matched by ``grade_id``, so students cannot weaken, delete or reorder them.

``grade_many`` grades many submissions at once, each in its own worker process and kernel;
the command line (this module's ``main``) checks the input first, keeps a CSV that is always
complete and in a stable order, resumes an interrupted run and writes a report::

    python -m helpers.course.grading generate [--solutions DIR] [--labs DIR]
    python -m helpers.course.grading check [--solutions DIR] [--labs DIR]
    python -m helpers.course.grading grade SUBMISSION.ipynb... [--jobs N] [--timeout S]
        [--memory-mb MB] [--csv FILE] [--report DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from helpers.course import kernel, labs, report
from helpers.course.labs import check_labs, generate_labs
from helpers.course.report import CSV_COLUMNS, format_result

# the labs and report names re-exported here are the ones a grading script needs
__all__ = ["GradedCell", "GradeResult", "default_jobs",
           "default_memory_mb", "grade", "grade_many", "check_submissions", "main",
           "generate_labs", "check_labs", "format_result", "CSV_COLUMNS"]

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


def _check_positive(name: str, value: float | None, unit: str = "seconds") -> None:
    """ValueError unless ``value`` is None or a finite number > 0."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0 < value < math.inf:
        shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{name} must be > 0 {unit}, got {shown}")


def _find_source(name: str, solutions_dir: Path) -> Path | None:
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
    source_path = _find_source(result.submission.name, solutions_dir)
    if source_path is None:
        result.error = _unknown_lab(result.submission, solutions_dir)
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


def _unknown_lab(submission: Path, solutions_dir: Path) -> str:
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
    _check_positive("timeout", timeout)
    _check_positive("cell_timeout", cell_timeout)
    _check_positive("memory_mb", memory_mb, "MB")
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


def _grade_in_worker(submission: Path, solutions_dir: Path, timeout: float,
                     cell_timeout: float | None, memory_mb: float | None) -> GradeResult:
    """``grade`` in a separate Python process, so one bad grading cannot stop the others."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    job = {"submission": str(submission), "solutions": str(solutions_dir), "timeout": timeout,
           "cell_timeout": cell_timeout, "memory_mb": memory_mb}
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from helpers.course.grading import _worker; _worker()"],
            input=json.dumps(job), capture_output=True, text=True, env=env,
            timeout=timeout + _WORKER_MARGIN_S)
        if done.returncode == 0:
            return _result_from_json(done.stdout.strip().splitlines()[-1])
        why = labs.first_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                              else f"exit code {done.returncode}")
    except subprocess.TimeoutExpired:
        why = f"worker did not finish within {timeout + _WORKER_MARGIN_S:g} s"
    except (OSError, ValueError, KeyError, TypeError) as error:
        why = f"{type(error).__name__}: {labs.first_line(error)}"
    return GradeResult(submission=submission, error=f"grader error: {why}")


def grade_many(submissions: Sequence[str | Path], solutions_dir: str | Path,
               jobs: int | None = None, timeout: float = 600.0,
               cell_timeout: float | None = None, memory_mb: float | None = None,
               on_result: Callable[[GradeResult], None] | None = None) -> list[GradeResult]:
    """Grade submissions in parallel, each in its own worker process and kernel.

    Args:
        submissions: The notebooks to grade.
        solutions_dir: Directory of source notebooks (``solutions/``).
        jobs: Gradings at once (default: ``default_jobs()``, the CPU cores).
        timeout: Time limit per notebook, in seconds.
        cell_timeout: Optional time limit per cell, in seconds.
        memory_mb: Memory limit per kernel in MB (default: ``default_memory_mb(jobs)``).
        on_result: Called with each result as soon as it is ready (in finishing order).

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
        _check_positive(name, value, unit)
    solutions_dir = Path(solutions_dir)
    labs.solution_notebooks(solutions_dir)
    paths = [Path(path) for path in submissions]
    results: list[GradeResult | None] = [None] * len(paths)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_grade_in_worker, path, solutions_dir, timeout, cell_timeout,
                               memory_mb): number for number, path in enumerate(paths)}
        for future in as_completed(futures):
            results[futures[future]] = result = future.result()
            if on_result is not None:
                on_result(result)
    return results


# ---------------------------------------------------------------- command line

def _student(path: Path, lab: str) -> str:
    """Who handed in ``path``: its name without the lab (``alice_lab1_pruning``), or its folder."""
    rest = path.stem.replace(lab, "", 1).strip(" _-.")
    return rest or path.resolve().parent.name


def check_submissions(submissions: Sequence[str | Path], solutions_dir: str | Path) -> list[str]:
    """Problems that stop a grading run before it starts, one line each (empty if none).

    Reported: a folder given instead of notebooks, a notebook for an unknown lab, and two
    submissions for the same student and lab (the student is the file name without the
    lab's name, ``alice_lab1_pruning.ipynb`` -> ``alice``, or else the folder's name,
    ``alice/lab1_pruning.ipynb`` -> ``alice``). A missing file is not a problem here: it is
    graded 0 with the reason.
    """
    solutions_dir = Path(solutions_dir)
    problems, owners = [], {}
    for path in map(Path, submissions):
        if path.is_dir():
            problems.append(f"{path} is a folder; pass its notebooks, e.g. {path}/*.ipynb "
                            f"or {path}/*/*.ipynb")
            continue
        source = _find_source(path.name, solutions_dir)
        if source is None:
            problems.append(f"{path}: {_unknown_lab(path, solutions_dir)}")
            continue
        key = (_student(path, source.stem), source.stem)
        if key in owners:
            problems.append(f"two submissions for student {key[0]!r}, {key[1]}: "
                            f"{owners[key]} and {path}; keep one")
        else:
            owners[key] = path
    return problems


def _default_root() -> Path:
    """The repository: the current directory if it has ``solutions/``, else the package's."""
    cwd = Path.cwd()
    return cwd if (cwd / "solutions").is_dir() else Path(__file__).resolve().parents[2]


def _parser(root: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.grading",
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
    command.add_argument("--jobs", type=int, default=default_jobs(),
                         help="submissions graded at once (default: the CPU cores, "
                              f"{default_jobs()} here)")
    command.add_argument("--timeout", type=float, default=600.0,
                         help="time limit per notebook in seconds (default 600)")
    command.add_argument("--cell-timeout", type=float, default=None,
                         help="time limit per cell in seconds (default: none)")
    command.add_argument("--memory-mb", type=float, default=None,
                         help="memory limit per kernel in MB (default: 80%% of RAM / jobs)")
    command.add_argument("--csv", type=Path, default=None,
                         help="the score table; rerunning with the same file resumes")
    command.add_argument("--report", type=Path, default=None, metavar="DIR",
                         help="write an HTML grade report (index.html and plots) here")
    return parser


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _grade_command(args: argparse.Namespace) -> int:
    """``grade``: check everything, then grade what the CSV does not hold yet."""
    memory_mb = args.memory_mb if args.memory_mb is not None else (
        default_memory_mb(args.jobs) if args.jobs > 0 else None)
    try:
        if args.jobs < 1:
            raise ValueError(f"--jobs must be a positive integer, got {args.jobs}")
        for name, value, unit in (("timeout", args.timeout, "seconds"),
                                  ("cell_timeout", args.cell_timeout, "seconds"),
                                  ("memory_mb", memory_mb, "MB")):
            _check_positive(name, value, unit)
        kept = report.read_csv(args.csv) if args.csv is not None else {}
    except ValueError as error:
        return _error(str(error))
    problems = check_submissions(args.submissions, args.solutions)
    if problems:
        extra = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        return _error(problems[0] + extra)
    if args.csv is not None and args.csv.is_dir():
        return _error(f"--csv {args.csv} is a folder; give a file name, e.g. {args.csv}/grades.csv")
    done = {report.submission_key(name) for name in kept}
    todo = [path for path in args.submissions if report.submission_key(path) not in done]
    if args.csv is not None and len(todo) < len(args.submissions):
        print(f"resuming: {len(args.submissions) - len(todo)} submission(s) already in "
              f"{args.csv}, grading {len(todo)}", file=sys.stderr)

    def record(result: GradeResult) -> None:
        print(report.format_result(result) + "\n", flush=True)
        kept[str(result.submission)] = report.csv_rows(result)
        if args.csv is not None:
            report.write_csv(args.csv, kept)

    try:
        if args.csv is not None:
            report.write_csv(args.csv, kept)  # fails early if the file cannot be written
        grade_many(todo, args.solutions, args.jobs, args.timeout, args.cell_timeout, memory_mb,
                   on_result=record)
        if args.report is not None:
            page = report.write_report(args.report, [row for rows in kept.values() for row in rows])
            print(f"report: {page}")
    except OSError as error:
        return _error(f"cannot write: {error}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: ``generate``, ``check`` or ``grade``; returns the exit code.

    Exit codes: 0 success (``grade``: grading ran, whatever the scores), 1 labs out of
    sync or an invalid source notebook, 2 usage error (nothing graded, no file written).
    """
    args = _parser(_default_root()).parse_args(argv)
    if not args.solutions.is_dir():
        return _error(f"solutions directory not found: {args.solutions}")
    if args.command == "grade":
        return _grade_command(args)
    try:
        if args.command == "generate":
            for path in labs.generate_labs(args.solutions, args.labs):
                print(f"wrote {path}")
            return 0
        problems = labs.check_labs(args.solutions, args.labs)
    except ValueError as error:  # an invalid source notebook
        return _error(str(error), 1)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"labs out of sync: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("labs in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())

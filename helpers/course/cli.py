"""The command line of the course tooling: ``python -m helpers.course``.

::

    python -m helpers.course generate [--solutions DIR] [--labs DIR]   # labs/ from solutions/
    python -m helpers.course check [--solutions DIR] [--labs DIR]      # exit 1 if stale or leaky
    python -m helpers.course grade SUBMISSION.ipynb... [--jobs N] [--timeout S]
        [--cell-timeout S] [--memory-mb MB] [--csv FILE] [--report DIR]

``grade`` checks its input before it grades anything (a folder instead of notebooks, a
notebook for an unknown lab, two submissions of one student for one lab: a one-line error,
exit 2, no file written), grades in parallel, rewrites the CSV atomically after each
submission (complete, sorted by submission), resumes from an existing CSV (submissions
already in it are not graded again) and writes the HTML report.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from helpers.course import labs, report
from helpers.course.grading import (GradeResult, check_limit, default_jobs, default_memory_mb,
                                    find_source, grade_many, unknown_lab)

__all__ = ["check_submissions", "main"]


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
        source = find_source(path.name, solutions_dir)
        if source is None:
            problems.append(f"{path}: {unknown_lab(path, solutions_dir)}")
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
    parser = argparse.ArgumentParser(prog="python -m helpers.course",
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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _grade_command(args: argparse.Namespace) -> int:
    """``grade``: check everything, then grade what the CSV does not hold yet."""
    try:
        if args.jobs < 1:
            raise ValueError(f"--jobs must be a positive integer, got {args.jobs}")
        memory_mb = default_memory_mb(args.jobs) if args.memory_mb is None else args.memory_mb
        for name, value, unit in (("timeout", args.timeout, "seconds"),
                                  ("cell_timeout", args.cell_timeout, "seconds"),
                                  ("memory_mb", memory_mb, "MB")):
            check_limit(name, value, unit)
        if args.csv is not None and args.csv.is_dir():
            raise ValueError(f"--csv {args.csv} is a folder; give a file, "
                             f"e.g. {args.csv / 'grades.csv'}")
        kept = report.read_csv(args.csv) if args.csv is not None else {}
    except ValueError as error:
        return _error(str(error))
    problems = check_submissions(args.submissions, args.solutions)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        return _error(problems[0] + more)
    done = {report.submission_key(name) for name in kept}
    todo = [path for path in args.submissions if report.submission_key(path) not in done]
    if len(todo) < len(args.submissions):
        print(f"resuming: {len(args.submissions) - len(todo)} submission(s) already in "
              f"{args.csv}, grading {len(todo)}", file=sys.stderr)

    def record(result: GradeResult) -> None:
        print(report.format_result(result) + "\n", flush=True)
        kept[str(result.submission)] = report.csv_rows(result)
        if args.csv is not None:
            report.write_csv(args.csv, kept)

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # `kill` stops the workers like Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
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
    except KeyboardInterrupt:
        where = f"; {args.csv} holds them, rerun the same command to resume" if args.csv else ""
        return _error(f"interrupted after {len(kept) - len(done)} submission(s){where}", 130)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
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


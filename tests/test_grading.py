"""Tests for helpers.course: lab generation, the sync/leak check, the autograder and its CLI.

The fixture lab ``tests/fixtures/grading/solutions/lab0_demo.ipynb`` is pure Python (a
``square`` function, a visible test worth 1 point, a test with hidden tests worth 2 and a
written answer worth 2) and names the kernel "python", which is not installed, so every
run here also checks that the grader falls back to the current interpreter. Submissions
are built from it in temporary directories; each is graded once (module-scoped fixture)
because every grading starts a kernel; most are graded in parallel through ``grade_many``.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import signal
import sys
import time
from pathlib import Path

import nbformat
import pytest

from helpers.course import cli, grading, kernel, report

FIXTURES = Path(__file__).parent / "fixtures" / "grading" / "solutions"
REPO = Path(__file__).resolve().parent.parent
LOOP_TIMEOUT = 5  # seconds for the infinite-loop submission
MEMORY_MB = 1000  # memory limit for the memory-hog submission, which asks for 3 GB
ALONE = {"infinite_loop": {"timeout": LOOP_TIMEOUT}, "memory_hog": {"memory_mb": MEMORY_MB}}


def _cell(notebook: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(cell for cell in notebook.cells
                if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _without(notebook: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    notebook.cells.remove(_cell(notebook, grade_id))
    return notebook


def _with_source(notebook: nbformat.NotebookNode, grade_id: str, source: str):
    _cell(notebook, grade_id).source = source
    return notebook


def _run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers.course", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    labs = tmp_path_factory.mktemp("labs")
    grading.generate_labs(FIXTURES, labs)
    return labs


@pytest.fixture()
def lab_copy(tmp_path, lab_dir) -> Path:
    """A private copy of the generated labs that a test may damage."""
    labs = tmp_path / "labs"
    labs.mkdir()
    (labs / "lab0_demo.ipynb").write_bytes((lab_dir / "lab0_demo.ipynb").read_bytes())
    return labs


# ---------------------------------------------------------------- generate

def test_generate_replaces_solutions_and_removes_hidden_tests(lab_dir):
    text = (lab_dir / "lab0_demo.ipynb").read_text()
    lab = nbformat.reads(text, as_version=4)
    assert _cell(lab, "square_impl").source == (
        'def square(x):\n    """Return x squared."""\n    raise NotImplementedError()')
    assert _cell(lab, "test_square_hidden").source == "assert square(3) == 9"
    assert _cell(lab, "test_square_visible").source.startswith("assert square(2) == 4")
    assert _cell(lab, "why_constant").source == "YOUR ANSWER HERE"
    for secret in ("BEGIN", "END SOLUTION", "HIDDEN", "x * x", "square(-4)", "0.25",
                   "one multiplication"):
        assert secret not in text
    for cell in lab.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert _cell(lab, "test_square_hidden").metadata.nbgrader == {
        "grade": True, "grade_id": "test_square_hidden", "locked": True, "points": 2,
        "schema_version": 3, "solution": False, "task": False}


def test_generate_is_deterministic(lab_dir, tmp_path):
    again = grading.generate_labs(FIXTURES, tmp_path / "again")
    assert again == [tmp_path / "again" / "lab0_demo.ipynb"]
    assert again[0].read_bytes() == (lab_dir / "lab0_demo.ipynb").read_bytes()


def test_generate_rejects_invalid_sources(tmp_path):
    source = nbformat.read(FIXTURES / "lab0_demo.ipynb", as_version=4)
    _with_source(source, "square_impl", "def square(x):\n    ### BEGIN SOLUTION\n    return x * x")
    (tmp_path / "bad").mkdir()
    nbformat.write(source, tmp_path / "bad" / "lab0_demo.ipynb")
    with pytest.raises(ValueError, match="never closed"):
        grading.generate_labs(tmp_path / "bad", tmp_path / "labs")
    assert not (tmp_path / "labs").exists()
    source = nbformat.read(FIXTURES / "lab0_demo.ipynb", as_version=4)
    _cell(source, "test_square_hidden").metadata.nbgrader["grade_id"] = "test_square_visible"
    nbformat.write(source, tmp_path / "bad" / "lab0_demo.ipynb")
    with pytest.raises(ValueError, match="duplicate grade_id 'test_square_visible'"):
        grading.generate_labs(tmp_path / "bad", tmp_path / "labs")
    with pytest.raises(ValueError, match="solutions_dir must be an existing directory"):
        grading.generate_labs(tmp_path / "nowhere", tmp_path / "labs")


# ---------------------------------------------------------------- check

def test_check_passes_on_fresh_generation(lab_dir, capsys):
    assert grading.check_labs(FIXTURES, lab_dir) == []
    assert cli.main(["check", "--solutions", str(FIXTURES), "--labs", str(lab_dir)]) == 0
    assert capsys.readouterr().out.strip() == "labs in sync"


def test_check_reports_planted_solution_leak(lab_copy):
    lab = nbformat.read(lab_copy / "lab0_demo.ipynb", as_version=4)
    _cell(lab, "square_impl").source += "\n    return x * x"
    nbformat.write(lab, lab_copy / "lab0_demo.ipynb")
    problems = grading.check_labs(FIXTURES, lab_copy)
    assert any("out of sync" in problem for problem in problems)
    leaks = [problem for problem in problems if "leaked" in problem]
    assert len(leaks) == 1 and "lab0_demo.ipynb cell 3" in leaks[0]
    assert "'return x * x'" in leaks[0]


def test_check_reports_planted_hidden_test_and_marker(lab_copy):
    lab = nbformat.read(lab_copy / "lab0_demo.ipynb", as_version=4)
    _cell(lab, "test_square_hidden").source += (
        "\n### BEGIN HIDDEN TESTS\nassert square(-4) == 16\n### END HIDDEN TESTS")
    nbformat.write(lab, lab_copy / "lab0_demo.ipynb")
    problems = "\n".join(grading.check_labs(FIXTURES, lab_copy))
    assert "marker 'BEGIN HIDDEN TESTS' leaked" in problems
    assert "'assert square(-4) == 16'" in problems


def test_check_reports_missing_extra_and_edited_labs(lab_copy):
    lab = lab_copy / "lab0_demo.ipynb"
    extra = lab_copy / "lab7_old.ipynb"
    extra.write_bytes(lab.read_bytes())
    lab.write_text(lab.read_text().replace("returns `x` squared", "returns x**2"))
    problems = grading.check_labs(FIXTURES, lab_copy)
    assert problems == [
        f"{lab}: out of sync with {FIXTURES / 'lab0_demo.ipynb'} (cell 2: source differs); "
        "run `python -m helpers.course generate`",
        f"{extra}: extra lab with no source in {FIXTURES}; delete it or add "
        f"{FIXTURES / 'lab7_old.ipynb'}"]
    lab.unlink()
    assert any(problem.startswith(f"{lab}: missing")
               for problem in grading.check_labs(FIXTURES, lab_copy))


def test_check_cli_exits_1_when_out_of_sync(lab_copy):
    (lab_copy / "lab0_demo.ipynb").write_text("{}")
    completed = _run_cli("check", "--solutions", str(FIXTURES), "--labs", str(lab_copy))
    assert completed.returncode == 1, completed.stderr
    assert f"{lab_copy / 'lab0_demo.ipynb'}: out of sync" in completed.stderr
    assert "labs in sync" not in completed.stdout


# ---------------------------------------------------------------- grade

def _submissions(root: Path, lab: Path) -> dict[str, Path]:
    """Every kind of submission, each in its own folder under its lab's file name."""
    solution = nbformat.read(FIXTURES / "lab0_demo.ipynb", as_version=4)
    untouched = nbformat.read(lab, as_version=4)
    fresh = lambda: nbformat.read(FIXTURES / "lab0_demo.ipynb", as_version=4)  # noqa: E731
    hardcoded = "def square(x):\n    return {2: 4, 3: 9}[x]"
    notebooks = {
        "solution": solution,
        "lab": untouched,
        "syntax_error": _with_source(fresh(), "square_impl", "def square(x)\n    return x * x"),
        "exception": _with_source(fresh(), "square_impl",
                                  "def square(x):\n    raise ValueError('boom')"),
        "deleted_correct": _without(fresh(), "test_square_hidden"),
        "deleted_hardcoded": _without(_with_source(fresh(), "square_impl", hardcoded),
                                      "test_square_hidden"),
        "weakened": _with_source(_with_source(fresh(), "square_impl", hardcoded),
                                 "test_square_hidden", "pass"),
    }
    reordered = fresh()
    tests = [_cell(reordered, "test_square_visible"), _cell(reordered, "test_square_hidden")]
    reordered.cells = tests + [cell for cell in reordered.cells if cell not in tests]
    notebooks["reordered"] = reordered
    def inserted(name: str, source: str) -> nbformat.NotebookNode:
        """A solution with one student cell after the visible test."""
        notebook = fresh()
        index = notebook.cells.index(_cell(notebook, "test_square_visible"))
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
        notebooks[name] = notebook
        return notebook

    pid_file = root / "infinite_loop" / "kernel.pid"  # the looping kernel writes its pid
    inserted("infinite_loop", f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))"
                              "\nwhile True:\n    pass")
    square = _cell(fresh(), "square_impl").source
    notebooks["memory_hog"] = _with_source(fresh(), "square_impl",
                                           square + "\nhog = bytearray(3 * 2**30)")
    inserted("kernel_exits", "import os\nos._exit(3)")
    inserted("chatty", "for _ in range(50):\n    print('x' * 100_000)")
    paths = {}
    for name, notebook in notebooks.items():
        paths[name] = root / name / "lab0_demo.ipynb"
        paths[name].parent.mkdir()
        nbformat.write(notebook, paths[name])
    raw = {"binary": b"\x89PNG\r\n\x1a\n\x00\xff", "text": b"my answers: 42", "empty": b"",
           "json_not_notebook": b'{"cells": 3}'}
    for name, data in raw.items():
        paths[name] = root / name / "lab0_demo.ipynb"
        paths[name].parent.mkdir()
        paths[name].write_bytes(data)
    paths["missing"] = root / "missing" / "lab0_demo.ipynb"
    paths["unknown_lab"] = root / "unknown" / "lab9_unknown.ipynb"
    paths["unknown_lab"].parent.mkdir()
    nbformat.write(solution, paths["unknown_lab"])
    return paths


@pytest.fixture(scope="module")
def graded(tmp_path_factory, lab_dir):
    """name -> (GradeResult, submission path, bytes before grading)."""
    paths = _submissions(tmp_path_factory.mktemp("submissions"), lab_dir / "lab0_demo.ipynb")
    before = {name: path.read_bytes() if path.exists() else None for name, path in paths.items()}
    together = [name for name in paths if name not in ALONE]
    finished = []
    results = dict(zip(together, grading.grade_many([paths[name] for name in together],
                                                    FIXTURES, jobs=2, timeout=120,
                                                    on_result=finished.append)))
    assert sorted(map(str, (r.submission for r in finished))) == sorted(
        str(paths[name]) for name in together), "on_result saw every result once"
    for name, limits in ALONE.items():
        results[name] = grading.grade(paths[name], FIXTURES, **{"timeout": 120, **limits})
    return {name: (results[name], paths[name], before[name]) for name in paths}


def _rows(result: grading.GradeResult) -> dict[str, grading.GradedCell]:
    return {row.grade_id: row for row in result.cells}


def test_fixture_names_a_kernel_that_is_not_installed():
    notebook = json.loads((FIXTURES / "lab0_demo.ipynb").read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python"


def test_solution_gets_full_marks_and_lists_manual_answer(graded):
    result = graded["solution"][0]
    assert (result.score, result.max_score, result.lab, result.error) == (3, 3, "lab0_demo", "")
    assert [row.status for row in result.cells] == ["passed", "passed", "manual"]
    assert [(row.grade_id, row.max_points) for row in result.needs_manual] == [("why_constant", 2)]
    report = grading.format_result(result)
    assert "why_constant" in report and "needs manual grading" in report
    assert report.splitlines()[-1] == "score: 3/3"


def test_untouched_lab_scores_zero(graded):
    result = graded["lab"][0]
    assert (result.score, result.max_score, result.error) == (0, 3, "")
    for row in result.cells[:2]:
        assert (row.status, row.reason) == ("failed", "NotImplementedError")
    assert result.needs_manual[0].grade_id == "why_constant"


@pytest.mark.parametrize("name, reason", [
    ("syntax_error", "NameError: name 'square' is not defined"),
    ("exception", "ValueError: boom"),
])
def test_broken_code_scores_zero_with_reason(graded, name, reason):
    result = graded[name][0]
    assert (result.score, result.max_score) == (0, 3)
    assert {row.reason for row in result.cells if row.kind == "auto"} == {reason}
    if name == "syntax_error":
        assert any("square_impl raised SyntaxError" in note for note in result.notes)


def test_infinite_loop_times_out_and_keeps_earlier_points(graded):
    result, path, _ = graded["infinite_loop"]
    rows = _rows(result)
    assert rows["test_square_visible"].status == "passed"
    assert rows["test_square_hidden"].status == "error"
    assert rows["test_square_hidden"].reason == "timed out before it ran"
    assert (result.score, result.max_score) == (1, 3)
    assert any(f"timed out (notebook time limit {LOOP_TIMEOUT} s); kernel killed" in note
               for note in result.notes)
    pid = int((path.parent / "kernel.pid").read_text())
    with pytest.raises(ProcessLookupError):  # the looping kernel is gone when grade returns
        os.kill(pid, 0)


def test_memory_limit_fails_the_hog_and_the_rest_runs(graded):
    result = graded["memory_hog"][0]
    rows = _rows(result)
    assert rows["test_square_visible"].status == "passed"
    assert rows["test_square_hidden"].status == "passed", "the kernel survived its MemoryError"
    assert any(f"raised MemoryError (memory limit {MEMORY_MB} MB)" in note
               for note in result.notes), result.notes


def test_a_kernel_that_exits_scores_zero_on_the_cells_it_did_not_run(graded):
    result = graded["kernel_exits"][0]
    rows = _rows(result)
    assert rows["test_square_visible"].status == "passed"
    assert (rows["test_square_hidden"].status, rows["test_square_hidden"].reason) == (
        "error", "kernel died before it ran")
    assert any("kernel died (crashed, exited or went over the memory limit" in note
               for note in result.notes), result.notes


def test_stored_output_is_capped(graded):
    result = graded["chatty"][0]
    assert (result.score, result.max_score) == (3, 3)
    assert any(note.startswith(f"outputs over {kernel.OUTPUT_LIMIT_BYTES:,} bytes were not stored")
               for note in result.notes), result.notes
    total = next(row for row in report.csv_rows(result) if row["grade_id"] == "TOTAL")
    assert "outputs over" in total["reason"]


def test_deleted_test_cell_is_reinserted_and_run(graded):
    correct, hardcoded = graded["deleted_correct"][0], graded["deleted_hardcoded"][0]
    assert (correct.score, correct.max_score) == (3, 3)
    assert any("test_square_hidden was missing; re-inserted" in note for note in correct.notes)
    assert (hardcoded.score, hardcoded.max_score) == (1, 3)
    row = _rows(hardcoded)["test_square_hidden"]
    assert (row.status, row.reason) == ("failed", "KeyError: -4")


def test_weakened_test_cell_is_replaced_by_the_source_version(graded):
    result = graded["weakened"][0]
    assert (result.score, result.max_score) == (1, 3)
    assert _rows(result)["test_square_hidden"].reason == "KeyError: -4"


def test_reordered_cells_run_in_source_order(graded):
    result = graded["reordered"][0]
    assert (result.score, result.max_score) == (3, 3)
    assert any("out of order" in note for note in result.notes)


@pytest.mark.parametrize("name, reason", [
    ("binary", "cannot read submission: not a notebook (not UTF-8 text)"),
    ("text", "cannot read submission: not a notebook (invalid JSON: Expecting value"),
    ("empty", "cannot read submission: empty file"),
    ("json_not_notebook", "cannot read submission: not a notebook"),
    ("missing", "cannot read submission: file not found"),
])
def test_unreadable_submission_scores_zero(graded, name, reason):
    result = graded[name][0]
    assert (result.score, result.max_score, result.lab) == (0, 3, "lab0_demo")
    assert result.error.startswith(reason)
    assert [row.status for row in result.cells] == ["error"] * 3
    assert grading.format_result(result).splitlines()[-1] == "score: 0/3"


def test_unknown_lab_name_is_reported(graded):
    result = graded["unknown_lab"][0]
    assert (result.score, result.max_score, result.lab, result.cells) == (0, 0, "", [])
    assert result.error.startswith("no lab named 'lab9_unknown'")
    assert "lab0_demo" in result.error


def test_submissions_are_never_modified(graded):
    for name, (_, path, before) in graded.items():
        assert (path.read_bytes() if path.exists() else None) == before, name


def test_grade_validates_arguments(tmp_path, capsys):
    submission = FIXTURES / "lab0_demo.ipynb"
    with pytest.raises(ValueError, match="timeout must be > 0 seconds, got -1"):
        grading.grade(submission, FIXTURES, timeout=-1)
    with pytest.raises(ValueError, match="cell_timeout must be > 0 seconds, got 0"):
        grading.grade(submission, FIXTURES, cell_timeout=0)
    with pytest.raises(ValueError, match="solutions_dir must be an existing directory"):
        grading.grade(submission, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="memory_mb must be > 0 MB, got 0"):
        grading.grade(submission, FIXTURES, memory_mb=0)
    with pytest.raises(ValueError, match="jobs must be a positive integer, got 0"):
        grading.grade_many([submission], FIXTURES, jobs=0)
    assert cli.main(["grade", str(submission), "--solutions", str(FIXTURES),
                     "--timeout", "-1"]) == 2
    assert "timeout must be > 0 seconds, got -1" in capsys.readouterr().err
    assert cli.main(["grade", str(submission), "--solutions", str(tmp_path)]) == 2
    assert "no lab named 'lab0_demo'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["grade"])
    assert exit_info.value.code == 2


def test_cli_grades_in_parallel_into_a_sorted_csv_and_a_report(tmp_path, graded):
    names = ["solution", "binary", "missing", "exception"]
    table, pages = tmp_path / "grades.csv", tmp_path / "report"
    completed = _run_cli("grade", *(str(graded[name][1]) for name in names), "--jobs", "2",
                         "--solutions", str(FIXTURES), "--csv", str(table), "--timeout", "120",
                         "--report", str(pages))
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stdout + completed.stderr
    scores = [line for line in completed.stdout.splitlines() if line.startswith("score:")]
    assert sorted(scores) == ["score: 0/3", "score: 0/3", "score: 0/3", "score: 3/3"]
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == grading.CSV_COLUMNS
    totals = [row for row in rows if row["grade_id"] == "TOTAL"]
    assert [row["submission"] for row in totals] == sorted(str(graded[n][1]) for n in names)
    by_name = {name: next(row for row in totals if row["submission"] == str(graded[name][1]))
               for name in names}
    assert [(by_name[n]["points"], by_name[n]["status"]) for n in names] == [
        ("3", "total"), ("0", "error"), ("0", "error"), ("0", "total")]
    assert len(rows) == 4 * (3 + 1)
    manual = [row for row in rows if row["status"] == "manual"]
    assert {(row["grade_id"], row["points"], row["max_points"]) for row in manual} == {
        ("why_constant", "", "2")}
    page = (pages / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    for png in ("lab0_demo_scores.png", "lab0_demo_pass_rate.png"):
        assert f'src="{png}"' in page and (pages / png).read_bytes()[:4] == b"\x89PNG"
    assert "Submissions that errored" in page and "cannot read submission: file not found" in page
    assert ("<td>test_square_hidden</td><td>2</td><td>1</td><td>1</td><td>2</td><td>25 %</td>"
            in page)  # points, passed, failed, not run, pass rate


def test_report_lists_pass_rates_and_errors_from_csv_rows(tmp_path, graded):
    rows = [row for name in ("solution", "lab", "binary")
            for row in report.csv_rows(graded[name][0])]
    page = report.write_report(tmp_path, rows).read_text()
    assert "3 submission(s), 1 lab(s)" in page
    assert ("<td>test_square_visible</td><td>1</td><td>1</td><td>1</td><td>1</td><td>33 %</td>"
            in page)
    errored = page[page.index("Submissions that errored"):]
    assert str(graded["binary"][1]) in errored and str(graded["lab"][1]) not in errored
    assert "not a notebook (not UTF-8 text)" in errored


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


@pytest.fixture()
def old_csv(tmp_path) -> Path:
    """An existing score table that a failed command must leave byte for byte."""
    path = tmp_path / "grades.csv"
    path.write_text(",".join(report.CSV_COLUMNS) + "\r\nold.ipynb,lab0_demo,TOTAL,1,3,total,\r\n")
    return path


def test_bad_input_is_a_one_line_error_and_leaves_the_csv(tmp_path, graded, old_csv, capsys):
    solution = graded["solution"][1]
    before = old_csv.read_bytes()
    twin = tmp_path / "x" / f"{solution.parent.name}_lab0_demo.ipynb"
    twin.parent.mkdir()
    twin.write_bytes(solution.read_bytes())
    cases = {
        "is a folder; pass its notebooks": [str(solution.parent)],
        "solutions directory not found": [str(solution), "--solutions", str(tmp_path / "no")],
        "two submissions for student 'solution', lab0_demo": [str(solution), str(twin)],
        "no lab named 'lab9_unknown'": [str(graded["unknown_lab"][1])],
        "--jobs must be a positive integer, got 0": [str(solution), "--jobs", "0"],
        "memory_mb must be > 0 MB, got -5": [str(solution), "--memory-mb", "-5"],
    }
    for message, args in cases.items():
        argv = ["grade", *args, "--csv", str(old_csv)]
        if "--solutions" not in args:
            argv += ["--solutions", str(FIXTURES)]
        assert cli.main(argv) == 2, message
        assert message in _one_line_error(capsys)
        assert old_csv.read_bytes() == before, message
    not_grades = tmp_path / "notes.csv"
    not_grades.write_text("name,grade\nalice,A\n")
    assert cli.main(["grade", str(solution), "--solutions", str(FIXTURES),
                     "--csv", str(not_grades)]) == 2
    assert "is not a grades CSV" in _one_line_error(capsys)
    assert not_grades.read_text() == "name,grade\nalice,A\n"


def test_check_submissions_names_the_student():
    assert cli.check_submissions([FIXTURES / "lab0_demo.ipynb"], FIXTURES) == []
    problems = cli.check_submissions(
        [Path("a/alice_lab0_demo.ipynb"), Path("alice/lab0_demo.ipynb"),
         Path("bob/lab0_demo.ipynb")], FIXTURES)
    assert problems == ["two submissions for student 'alice', lab0_demo: "
                        "a/alice_lab0_demo.ipynb and alice/lab0_demo.ipynb; keep one"]


def test_rerun_resumes_without_regrading(tmp_path, graded, capsys):
    solution, binary, empty = (graded[name][1] for name in ("solution", "binary", "empty"))
    table = tmp_path / "grades.csv"
    kept = {str(solution): [dict(zip(report.CSV_COLUMNS, [str(solution), "lab0_demo", "TOTAL",
                                                           "3", "3", "total", "from before"]))],
            str(binary): [dict(zip(report.CSV_COLUMNS, [str(binary), "lab0_demo",
                                                         "test_square_visible", "0", "1",
                                                         "error", "no TOTAL: unfinished"]))]}
    report.write_csv(table, kept)
    assert cli.main(["grade", str(solution), str(binary), str(empty), "--solutions",
                     str(FIXTURES), "--csv", str(table), "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert "resuming: 1 submission(s) already in" in captured.err
    assert f"submission: {solution}" not in captured.out  # not graded again
    rows = list(csv.DictReader(table.open(newline="")))
    assert [row["reason"] for row in rows if row["submission"] == str(solution)] == ["from before"]
    assert "no TOTAL: unfinished" not in {row["reason"] for row in rows}  # regraded
    assert [row["submission"] for row in rows if row["grade_id"] == "TOTAL"] == sorted(
        map(str, (solution, binary, empty)))


def test_interrupted_run_leaves_a_complete_csv_and_stops_its_kernels(tmp_path, graded):
    binary = graded["binary"][1]
    slow = tmp_path / "slow" / "lab0_demo.ipynb"
    slow.parent.mkdir()
    notebook = nbformat.read(FIXTURES / "lab0_demo.ipynb", as_version=4)
    pid_file = tmp_path / "slow.pid"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)"))
    nbformat.write(notebook, slow)
    table = tmp_path / "grades.csv"
    command = [sys.executable, "-m", "helpers.course", "grade", str(binary), str(slow),
               "--solutions", str(FIXTURES), "--csv", str(table), "--jobs", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # the slow kernel has started: binary is graded and written
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the slow submission never started")
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130 and "interrupted after 1 submission(s)" in err, err
    rows = list(csv.DictReader(table.open(newline="")))
    assert {row["submission"] for row in rows} == {str(binary)}
    assert rows[-1]["grade_id"] == "TOTAL"
    pid = int(pid_file.read_text())
    for _ in range(60):  # the kernel notices its worker is gone (ipykernel's parent poller)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"kernel {pid} still runs after the interrupt")
    again = subprocess.run([*command[:-2], "--timeout", "2"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resuming: 1 submission(s)" in again.stderr, again.stderr
    totals = [row for row in csv.DictReader(table.open(newline="")) if row["grade_id"] == "TOTAL"]
    assert [row["submission"] for row in totals] == sorted([str(binary), str(slow)])

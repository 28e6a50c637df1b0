"""Grade reports: the text report of one submission, the score CSV and the class's HTML page.

The CSV holds one row per graded cell and a ``TOTAL`` row per submission (columns
``CSV_COLUMNS``). It is always rewritten whole, atomically (a temporary file renamed into
place), sorted by submission, so an interrupted run leaves a complete CSV of the
submissions graded so far and a rerun resumes from it. ``write_report`` turns those rows into
a self-contained ``index.html`` (PNG plots beside it): the score distribution per lab, the
pass rate of each test, and the submissions that errored and why.
"""
from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from helpers import cache

__all__ = ["CSV_COLUMNS", "format_result", "csv_rows", "submission_key", "read_csv",
           "write_csv", "write_report"]

CSV_COLUMNS = ["submission", "lab", "grade_id", "points", "max_points", "status", "reason"]


def _number(value: float) -> str:
    return f"{value:g}"


def format_result(result) -> str:
    """The text report of one ``GradeResult``; its last line is ``score: X/Y``."""
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


def csv_rows(result) -> list[dict[str, str]]:
    """One CSV row per graded cell plus a TOTAL row (manual cells have empty points)."""
    submission = str(result.submission)
    rows = [dict(zip(CSV_COLUMNS, [submission, result.lab, row.grade_id,
                                   "" if row.status == "manual" else _number(row.points),
                                   _number(row.max_points), row.status, row.reason]))
            for row in result.cells]
    manual_points = sum(row.max_points for row in result.needs_manual)
    reasons = [result.error] + [note for note in result.notes
                                if note.startswith(("run stopped", "outputs over"))]
    if manual_points:
        reasons.append(f"{_number(manual_points)} point(s) need manual grading")
    rows.append(dict(zip(CSV_COLUMNS, [submission, result.lab, "TOTAL", _number(result.score),
                                       _number(result.max_score),
                                       "error" if result.error else "total",
                                       "; ".join(reason for reason in reasons if reason)])))
    return rows


def submission_key(submission: str | Path) -> str:
    """The identity of a submission across runs: its absolute path."""
    return str(Path(submission).resolve())


def read_csv(path: Path) -> dict[str, list[dict[str, str]]]:
    """The rows of an existing score CSV by submission, keeping only complete submissions.

    A submission counts as graded when its ``TOTAL`` row is present. A missing file reads as
    empty.

    Raises:
        ValueError: If the file exists but is not a score CSV written by the grader.
    """
    path = Path(path)
    if not path.exists() or path.is_dir():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != CSV_COLUMNS:
                raise ValueError(f"{path} exists and is not a grades CSV (its columns are "
                                 f"{reader.fieldnames}); choose another --csv file")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"cannot read {path}: {error}; choose another --csv file") from None
    by_submission: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_submission[row["submission"]].append(row)
    return {name: group for name, group in by_submission.items()
            if any(row["grade_id"] == "TOTAL" for row in group)}


def write_csv(path: Path, rows: Mapping[str, list[dict[str, str]]]) -> Path:
    """Write every submission's rows, sorted by submission, atomically (never half-written)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerows(rows[name])
    data = buffer.getvalue().encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return cache.atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


# ---------------------------------------------------------------- the class report

def _figure_png(path: Path, draw) -> str:
    """Draw with ``draw(ax)`` in the course style, save a PNG, return its file name."""
    # matplotlib is imported here, not at the top: grading workers import this module and
    # never draw, and matplotlib adds about a second to their start-up
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    ax.grid(True, alpha=0.3)
    draw(ax)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _score_plot(ax, lab: str, scores: list[float], max_score: float) -> None:
    bins = max(1, min(20, int(max_score) + 1)) if max_score else 1
    ax.hist(scores, bins=bins, range=(0, max_score or 1), color="#1f77b4", edgecolor="white")
    ax.set_title(f"{lab}: score distribution ({len(scores)} submissions)")
    ax.set_xlabel(f"score (out of {max_score:g})")
    ax.set_ylabel("submissions")


def _pass_plot(ax, lab: str, rates: list[tuple[str, float]]) -> None:
    names = [name for name, _ in rates][::-1]
    values = [100 * rate for _, rate in rates][::-1]
    ax.barh(names, values, color=["#d62728" if value < 50 else "#2ca02c" for value in values])
    ax.set_xlim(0, 100)
    ax.set_title(f"{lab}: pass rate per test")
    ax.set_xlabel("% of submissions that passed")


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out_dir: str | Path, rows: Iterable[Mapping[str, str]]) -> Path:
    """Write ``index.html`` and its PNG plots for the graded rows (as in the CSV).

    Per lab: a histogram of the total scores, a bar chart of each test's pass rate (the
    concepts the class missed show as short red bars) and a table of the same numbers. Then
    every submission that errored (a test not run, or the submission unreadable) with the
    reason. No remote URL: the page and its PNG files work offline.

    Args:
        out_dir: Directory for ``index.html`` and the plots, created if needed.
        rows: CSV rows (dicts with ``CSV_COLUMNS``) of any number of submissions.

    Returns:
        The path of ``index.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    totals = [row for row in rows if row["grade_id"] == "TOTAL"]
    parts = ["<h1>Grade report</h1>",
             f"<p>{len(totals)} submission(s), "
             f"{len({row['lab'] for row in totals if row['lab']})} lab(s).</p>"]
    for lab in sorted({row["lab"] for row in totals if row["lab"]}):
        lab_totals = [row for row in totals if row["lab"] == lab]
        scores = [float(row["points"]) for row in lab_totals]
        max_score = max(float(row["max_points"]) for row in lab_totals)
        tests: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            if row["lab"] == lab and row["grade_id"] != "TOTAL" and row["status"] != "manual":
                tests[row["grade_id"]].append(row)
        rates = [(name, sum(row["status"] == "passed" for row in group) / len(group))
                 for name, group in tests.items()]
        score_png = _figure_png(out_dir / f"{lab}_scores.png",
                                lambda ax: _score_plot(ax, lab, scores, max_score))
        pass_png = _figure_png(out_dir / f"{lab}_pass_rate.png",
                               lambda ax: _pass_plot(ax, lab, rates))
        mean = sum(scores) / len(scores)
        parts += [f"<h2>{html.escape(lab)}</h2>",
                  f"<p>mean score {mean:.1f} / {max_score:g}, "
                  f"median {sorted(scores)[len(scores) // 2]:g}, "
                  f"{sum(score == max_score for score in scores)} full mark(s).</p>",
                  f'<img src="{score_png}" alt="score distribution of {html.escape(lab)}">',
                  f'<img src="{pass_png}" alt="pass rate per test of {html.escape(lab)}">',
                  _table(["test", "points", "passed", "failed", "not run", "pass rate"],
                         [[name, tests[name][0]["max_points"],
                           sum(row["status"] == "passed" for row in tests[name]),
                           sum(row["status"] == "failed" for row in tests[name]),
                           sum(row["status"] == "error" for row in tests[name]),
                           f"{100 * rate:.0f} %"] for name, rate in rates])]
    not_run: dict[str, Mapping[str, str]] = {}  # submission -> its first test not run
    for row in rows:
        if row["status"] == "error" and row["grade_id"] != "TOTAL":
            not_run.setdefault(row["submission"], row)
    errored = [row for row in totals if row["status"] == "error" or row["submission"] in not_run]
    parts.append("<h2>Submissions that errored</h2>")
    parts.append(_table(["submission", "lab", "score", "why"],
                        [[row["submission"], row["lab"] or "-",
                          f"{row['points']}/{row['max_points']}", _why(row, not_run)]
                         for row in errored]) if errored else "<p>None.</p>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:auto}img{max-width:100%}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:.2em .5em;text-align:left}")
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Grade report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    target = out_dir / "index.html"
    return cache.atomic_write(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def _why(total: Mapping[str, str], not_run: Mapping[str, Mapping[str, str]]) -> str:
    """Why a submission errored: its first test not run, else its TOTAL reason."""
    first = not_run.get(total["submission"])
    return f"{first['grade_id']}: {first['reason']}" if first else total["reason"]

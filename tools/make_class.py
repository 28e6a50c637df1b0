"""Write N lab-1 submissions that differ as real ones do, to measure the grader's throughput.

    python tools/make_class.py 40 /tmp/class
    time .venv/bin/python -m helpers.course grade /tmp/class/*/lab1_pruning.ipynb --jobs 2 \
        --csv /tmp/class/grades.csv

Each copy of the lab-1 solution fine-tunes under its own seed, so each tuned model (and its
flatbuffer) is new to the grader, as a real class's would be; identical copies would let
every conversion after the first come from the cache. The folder is replaced.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

SOLUTION = Path(__file__).resolve().parent.parent / "solutions" / "lab1_pruning.ipynb"


def make_class(count: int, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    notebook = json.loads(SOLUTION.read_text())
    for number in range(count):
        copy = json.loads(json.dumps(notebook))
        cell = next(c for c in copy["cells"]
                    if c["metadata"].get("nbgrader", {}).get("grade_id") == "fine_tune")
        source = "".join(cell["source"]).replace(
            "### BEGIN SOLUTION\n", f"### BEGIN SOLUTION\nmodels.set_seed({100 + number})\n")
        cell["source"] = source.splitlines(keepends=True)
        student = folder / f"student{number:03d}"
        student.mkdir(parents=True)
        (student / "lab1_pruning.ipynb").write_text(json.dumps(copy, indent=1))


if __name__ == "__main__":
    make_class(int(sys.argv[1]), Path(sys.argv[2]))

"""Every committed notebook is clean (no outputs) and follows the lesson conventions.

The notebooks themselves are run by nbval: pytest collects lessons/ and solutions/ (see
pyproject.toml); labs/ is checked by the grading tests instead.
"""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for folder in ("lessons", "solutions", "labs")
                   for p in (ROOT / folder).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
LESSONS = [p for p in NOTEBOOKS if p.parts[-2] in ("lessons", "deeper")]


def test_the_introduction_exists():
    assert ROOT / "lessons" / "00_introduction.ipynb" in LESSONS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} have outputs: clear them before committing"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_lesson_conventions(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert "Learning goals" in cells[0].source or "learning goals" in cells[0].source
    code = [c.source for c in cells if c.cell_type == "code"]
    assert any(src.startswith("DATASET = ") for src in code[:3]), "a DATASET parameter cell"
    assert any("quiz.show(" in src for src in code), "a pop-up quiz"
    long_cells = [src.splitlines()[0] for src in code if len(src.splitlines()) > 15]
    assert not long_cells, f"move long code into helpers/: {long_cells}"

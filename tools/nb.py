"""Write a notebook from a compact list of cells (used while authoring; notebooks are the source).

    python tools/nb.py  # not needed by students; see build_notebook() below
"""
from __future__ import annotations

import nbformat


def build_notebook(cells: list[tuple[str, str]], path: str) -> None:
    """cells: ("md" | "code", source). Writes an output-free notebook with a python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                  "language": "python"},
                   "language_info": {"name": "python"}}
    for kind, source in cells:
        source = source.strip("\n")
        nb.cells.append(nbformat.v4.new_markdown_cell(source) if kind == "md"
                        else nbformat.v4.new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    nbformat.write(nb, path)

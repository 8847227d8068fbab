"""Write small notebooks for tests that need a variation of a fixture (e.g. an edited cell)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(
    path: Path,
    parameters: str | None = "",
    cells: list[str] = (),  # type: ignore[assignment]
    markdown: str | None = None,
    kernel: str = "python3",
) -> Path:
    """A notebook: optional markdown cell, a `parameters` cell (None: no such cell), then `cells`."""
    nb_cells = []
    if markdown is not None:
        nb_cells.append(new_markdown_cell(markdown))
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb_cells.append(cell)
    nb_cells.extend(new_code_cell(source) for source in cells)
    for i, cell in enumerate(nb_cells):
        cell.id = f"cell-{i}"
    nb = new_notebook(cells=nb_cells, metadata={"kernelspec": {**KERNELSPEC, "name": kernel}})
    nbformat.write(nb, path)
    return path

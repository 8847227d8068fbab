"""A trivial notebook for the notebook-run benchmarks: a `parameters` cell and one more cell."""

from __future__ import annotations

from pathlib import Path


def write_trivial_notebook(path: Path, parameters: str, body: str) -> Path:
    """Write a notebook (kernel python3) whose cells are `parameters` (tagged) and `body`."""
    import nbformat

    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(
        cells=[cell, nbformat.v4.new_code_cell(body)],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, path)
    return path

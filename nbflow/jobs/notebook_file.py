"""Reading a notebook file: its bytes, validated and upgraded to nbformat 4.5, errors naming it.

Its own module because both the runs (`jobs.notebook`) and the parameter reader
(`jobs.parameters`) read notebooks, and the second must not import the first.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from nbflow.core.errors import JobsError, did_you_mean

__all__ = ["NotebookReadError", "read_notebook", "read_notebook_bytes"]


class NotebookReadError(JobsError):
    """A notebook file is missing, is not a .ipynb file, or is not a valid notebook."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"cannot read notebook `{path}`: {detail}")


def read_notebook_bytes(path: Path) -> bytes:
    """The bytes of the notebook file at `path`; errors name the file (and a near miss)."""
    if path.suffix != ".ipynb" and path.is_file():
        raise NotebookReadError(path, "it is not a .ipynb file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        near = did_you_mean(path.name, [p.name for p in path.parent.glob("*.ipynb")])
        raise NotebookReadError(path, f"no such file{near}") from None
    except OSError as exc:
        raise NotebookReadError(path, str(exc)) from exc


def read_notebook(path: Path, data: bytes | None = None) -> nbformat.NotebookNode:
    """Read and validate a notebook, with papermill's metadata slots; errors name the file.

    `data`: the file's bytes, when the caller has read them already.
    """
    if data is None:
        data = read_notebook_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookReadError(path, str(exc)) from exc
    try:
        # nbformat.reads would validate before the upgrade below, and log a repaired
        # notebook as invalid: read and convert without it, validate once after.
        nb = nbformat.convert(nbformat.reader.reads(text), 4)
        # Upgrade to the current 4.x minor, as papermill's own reader does: nbformat 4.5
        # gave cells ids, and the cells a run adds (injected parameters, error banner)
        # get one, which a 4.4 notebook's schema rejects ("'id' was unexpected"). Done
        # before validating, so a 4.4 output that an earlier nbflow wrote with such an
        # id (invalid as 4.4) is repaired, not refused.
        nb = nbformat.v4.upgrade(nb) or nb
        nbformat.validate(nb)
    # nbformat raises NotJSONError (ValueError), jsonschema's ValidationError,
    # or plain TypeError/KeyError/AttributeError on JSON of the wrong shape.
    except (ValueError, TypeError, KeyError, AttributeError, nbformat.ValidationError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise NotebookReadError(
            path, f"it is not a valid notebook ({detail}); open it in Jupyter to repair it"
        ) from exc
    nb.metadata.setdefault(
        "papermill", {"default_parameters": {}, "parameters": {}, "environment_variables": {}}
    )
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
        cell.metadata.setdefault("papermill", {})
    return nb

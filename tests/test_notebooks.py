"""Every notebook in notebooks/ runs top to bottom with papermill, so none can rot.

Each runs in a fresh nbflow home (the shared cache starts empty) through
`run_notebook`; the example notebooks also record what their runs did, which
is checked here against what each notebook's text promises.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import nbflow as nf
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def streams(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "stream"
    )


def test_the_example_notebooks_are_all_here():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "magics.ipynb", "daily_etl.ipynb"} <= names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook: Path, tmp_path: Path):
    nr = nf.run_notebook(notebook, output=tmp_path / notebook.name, timeout=240, cwd=tmp_path)
    assert nr.ok, f"{notebook.name} failed: {nr.error}"
    assert nr.output_path.exists()


def test_quickstart_reruns_only_what_changed_and_says_why(tmp_path: Path):
    nr = nf.run_notebook(ROOT / "notebooks/quickstart.ipynb", output=tmp_path / "qs.ipynb")
    assert nr.ok, nr.error
    out = nr.outputs
    assert out["first_executed"] == ["extract", "clean", "enrich", "load"]
    assert out["again_executed"] == []
    assert out["edit_explained"] == "stale: code of helper `segment` changed"
    assert out["edited_executed"] == ["enrich", "load"]
    assert out["next_day_executed"] == ["extract", "clean", "enrich", "load"]
    assert out["rows_loaded"] > 0
    # The widget's static graph is in the output notebook, with the final states.
    nb = nbformat.read(nr.output_path, as_version=4)
    svgs = [
        o.data["image/svg+xml"]
        for c in nb.cells
        for o in c.get("outputs", [])
        if "data" in o and "image/svg+xml" in o.data
    ]
    assert len(svgs) == 1 and svgs[0].count('class="node"') == 4
    # ...and nbconvert's HTML shows that graph (no live widget is needed to read it).
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_filename(str(nr.output_path))
    assert page.count('class="node"') == 4 and "nbflow-static" in page
    # A second run of the notebook shares the home's cache: nothing recomputes.
    again = nf.run_notebook(ROOT / "notebooks/quickstart.ipynb", output=tmp_path / "qs2.ipynb")
    assert again.outputs["first_executed"] == []
    assert again.outputs["next_day_executed"] == []


def test_magics_notebook_prints_status_lines_and_reacts_to_a_global(tmp_path: Path):
    nr = nf.run_notebook(ROOT / "notebooks/magics.ipynb", output=tmp_path / "m.ipynb")
    assert nr.ok, nr.error
    text = streams(nr.output_path)
    assert "[nbflow] extract: ran in" in text
    assert "[nbflow] extract: loaded from cache in" in text
    assert "global `threshold` changed: 100 → 150" in text
    assert "upstream ran first: big" in text
    assert nr.outputs["n_big"] == nr.outputs["summary_count"]

"""Every notebook in notebooks/ runs top to bottom with papermill, so none can rot.

Each runs in a fresh nbflow home (the shared cache starts empty) through
`run_notebook`; the example notebooks also record what their runs did, which
is checked here against what each notebook's text promises — on the first run
and on a second one in the same home (as "Restart and Run All" does), since a
reader runs a notebook more than once and its text must stay true.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import nbflow as nf
from nbflow.jobs.notebook import NotebookRun
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


def check_quickstart_story(nr: NotebookRun) -> None:
    """What the quickstart's text says happens, on any run of it."""
    assert nr.ok, nr.error
    out = nr.outputs
    assert out["first_executed"] == ["extract", "clean", "enrich", "load"]
    assert out["again_executed"] == []
    assert out["edit_explained"] == "stale: code of helper `segment` changed"
    assert out["edited_executed"] == ["enrich", "load"]
    assert out["next_day_executed"] == ["extract", "clean", "enrich", "load"]
    assert out["rows_loaded"] > 0


def test_quickstart_reruns_only_what_changed_and_says_why(tmp_path: Path):
    nr = nf.run_notebook(ROOT / "notebooks/quickstart.ipynb", output=tmp_path / "qs.ipynb")
    check_quickstart_story(nr)
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


def test_quickstart_tells_the_same_story_when_run_again(tmp_path: Path):
    """A second run in the same home (Restart and Run All) starts from its own cleared cache,
    so "enrich and load are stale" stays true instead of `fresh: unchanged since it last ran`."""
    for i in (1, 2):
        nr = nf.run_notebook(ROOT / "notebooks/quickstart.ipynb", output=tmp_path / f"qs{i}.ipynb")
        check_quickstart_story(nr)


def check_magics_story(nr: NotebookRun) -> None:
    assert nr.ok, nr.error
    text = streams(nr.output_path)
    assert "[nbflow] extract: ran in" in text
    assert "[nbflow] extract: loaded from cache in" in text
    assert "global `threshold` changed: 100 → 150" in text
    assert "upstream ran first: big" in text
    assert nr.outputs["n_big"] == nr.outputs["summary_count"]


def test_magics_notebook_prints_status_lines_and_reacts_to_a_global(tmp_path: Path):
    for i in (1, 2):  # the second run, in the same home, tells the same story
        nr = nf.run_notebook(ROOT / "notebooks/magics.ipynb", output=tmp_path / f"m{i}.ipynb")
        check_magics_story(nr)


def test_shared_cache_notebook_computes_nothing_the_second_time(tmp_path: Path):
    """Its text: a second run with the same parameters computes nothing; a new `rate`
    recomputes only the tasks that take it (and what depends on them)."""
    path = ROOT / "notebooks/shared_cache.ipynb"
    first = nf.run_notebook(path, output=tmp_path / "s1.ipynb")
    assert first.ok, first.error
    assert sorted(first.outputs["executed"]) == ["per_day", "sales", "taxed", "working_days"]
    again = nf.run_notebook(path, output=tmp_path / "s2.ipynb")
    assert again.outputs["executed"] == [] and again.outputs["per_day"] == first.outputs["per_day"]
    new_rate = nf.run_notebook(path, {"rate": 0.25}, output=tmp_path / "s3.ipynb")
    assert sorted(new_rate.outputs["executed"]) == ["per_day", "taxed"]


def test_daily_etl_reruns_nothing_for_the_same_date(tmp_path: Path):
    path = ROOT / "notebooks/daily_etl.ipynb"
    first = nf.run_notebook(path, {"date": "2024-01-01"}, output=tmp_path / "d1.ipynb")
    assert first.ok and first.outputs["executed"] == ["extract", "transform", "load"]
    again = nf.run_notebook(path, {"date": "2024-01-01"}, output=tmp_path / "d2.ipynb")
    assert again.ok and again.outputs["executed"] == []

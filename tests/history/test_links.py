"""Notebook runs and job runs are recorded, linked to the pipeline runs inside them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import nbflow as nf
from nbflow.cli import cli
from nbflow.history import get_run
from nbflow.history.api import children
from tests.jobs.notebooks import write_notebook

INNER = """
import nbflow as nf
p = nf.Pipeline("in_kernel")
p.task(lambda: print("computed in the kernel") or 1, name="one")
p.run()
"""


def test_a_notebook_run_links_the_pipeline_runs_in_its_kernel(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "inner.ipynb", cells=[INNER])
    nr = nf.run_notebook(nb)
    assert nr.ok and nr.run_id
    run = get_run(nr.run_id)
    assert (run.kind, run.name, run.state, run.output) == (
        "notebook",
        "inner",
        "ok",
        str(nr.output_path),
    )
    [inner] = children(nr.run_id)
    assert (inner.kind, inner.name, inner.parent) == ("pipeline", "in_kernel", nr.run_id)
    assert inner.task("one").log == "computed in the kernel\n"


def test_a_failed_notebook_run_is_recorded_failed(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "broken.ipynb", cells=["raise ValueError('bad data')"])
    nr = nf.run_notebook(nb)
    assert not nr.ok
    run = get_run(nr.run_id or "")
    assert run.state == "failed" and "bad data" in run.error


def test_a_triggered_job_run_links_its_notebook_run(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "job.ipynb", cells=[INNER])
    runner = CliRunner()
    result = runner.invoke(cli, ["schedule", "add", "nightly", str(nb), "--cron", "0 2 * * *"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["trigger", "nightly"])
    assert result.exit_code == 0, result.output
    [job] = nf.history("nightly", kind="job")
    assert job.state == "ok" and job.id.startswith("job-")
    [notebook] = children(job.id)
    assert notebook.kind == "notebook"
    [pipeline] = children(notebook.id)
    assert pipeline.name == "in_kernel"
    shown = runner.invoke(cli, ["history", "show", job.id])
    assert f"child    {notebook.id} notebook" in shown.output
    # `nbflow runs` links the job run to its history records and the runs inside it.
    listed = runner.invoke(cli, ["runs", "nightly", "--wide"])
    assert listed.exit_code == 0, listed.output
    assert f"{job.id} > notebook {notebook.id} (1 pipeline run)" in listed.output
    assert "`nbflow history show ID`" in listed.output
    data = json.loads(runner.invoke(cli, ["runs", "--json"]).output)
    [linked] = data[0]["history"]
    assert (linked["id"], linked["kind"], linked["state"]) == (job.id, "job", "ok")
    [nb_link] = linked["inner"]
    assert (nb_link["id"], nb_link["kind"]) == (notebook.id, "notebook")
    assert [(p["id"], p["name"]) for p in nb_link["inner"]] == [(pipeline.id, "in_kernel")]


def test_a_notebook_run_keeps_what_it_recorded(tmp_path: Path) -> None:
    nb = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks" / "records_outputs.ipynb"
    nr = nf.run_notebook(nb, output=tmp_path / "out.ipynb")
    assert nr.ok
    outputs = get_run(nr.run_id or "").outputs or {}
    # Short JSON as it is; anything else (a tuple, a DataFrame, an object) as its repr.
    assert outputs["count"] == 30 and outputs["names"] == ["a", "b", "c"]
    assert outputs["nested"] == {"k": [1, 2.5, None, True]}
    assert outputs["pair"] == [1, 2]
    assert "x" in outputs["frame"] and isinstance(outputs["frame"], str)
    assert outputs["point"].startswith("<") and "Point" in outputs["point"]

"""`nf.diff_runs` and `nbflow history diff`: what differs between two real runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import nbflow as nf
from nbflow import NbflowError
from nbflow.cli import cli
from tests.history.test_env import run_script, write_pipeline
from tests.jobs.notebooks import write_notebook


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_an_edited_task_and_a_changed_parameter_are_named(tmp_path: Path, home: Path) -> None:
    script = write_pipeline(tmp_path / "etl.py", n=3)
    a = run_script(script, home)
    write_pipeline(script, n=4, edit=" * 2")
    b = run_script(script, home)
    d = nf.diff_runs(a, b)
    assert d.params == {"n": (3, 4)}
    raw, total = d.task("raw"), d.task("total")
    assert raw.params == ("parameter `n` changed: 3 → 4",) and not raw.code
    assert total.code == ("code of `total` changed",)
    assert total.inputs[0].startswith("upstream `raw` value ")
    assert d.env["source digest"][0] != d.env["source digest"][1]
    out = _invoke("history", "diff", a, b)
    assert re.search(r"parameter +n +3 +4", out)
    assert "total   code of `total` changed" in out
    assert "raw     parameter `n` changed: 3 → 4" in out
    data = json.loads(_invoke("history", "diff", a[:8], b, "--json"))
    assert data["params"] == {"n": [3, 4]} and data["same"] is False
    assert {t["task"] for t in data["tasks"]} == {"raw", "total"}


def test_a_helper_a_global_and_an_upstream_value_are_told_apart(pipe: nf.Pipeline) -> None:
    scale = {"factor": 2}

    def helper(x: int) -> int:
        return x * scale["factor"]

    @pipe.task
    def raw() -> int:
        return helper(1)

    @pipe.task
    def clean(raw: int) -> int:
        return raw + 1

    first = pipe.run().run_id
    scale["factor"] = 3  # a closure cell the task reads: its code part changes
    second = pipe.run().run_id
    d = nf.diff_runs(first, second)
    [why] = d.task("raw").code
    assert why.endswith("`scale` changed: {'factor': 2} → {'factor': 3}")
    assert not d.task("clean").code and d.task("clean").inputs
    assert "produced" not in d.task("clean").inputs[0]  # digests, not the planner's phrase
    assert nf.diff_runs(second, pipe.run().run_id).same  # a cached rerun differs in nothing


def test_a_forced_rerun_with_another_value_says_so(pipe: nf.Pipeline, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")

    @pipe.task
    def tick() -> int:
        value = int(counter.read_text()) + 1
        counter.write_text(str(value))
        return value

    a = pipe.run().run_id
    b = pipe.run(force=True).run_id
    [t] = nf.diff_runs(a, b).tasks
    assert t.key_a == t.key_b and t.digest_a != t.digest_b
    assert "not deterministic, or was forced" in t.other[0]


def test_runs_of_different_pipelines_are_refused_unless_forced(home: Path) -> None:
    one, two = nf.Pipeline("one"), nf.Pipeline("two")
    one.task(lambda: 1, name="x")
    two.task(lambda: 1, name="y")
    a, b = one.run().run_id, two.run().run_id
    with pytest.raises(NbflowError, match=rf"run {a} is a pipeline run of `one` and run {b}"):
        nf.diff_runs(a, b)
    result = CliRunner().invoke(cli, ["history", "diff", a, b])
    assert result.exit_code != 0 and "`one`" in result.output and "`two`" in result.output
    assert "--force" in result.output
    d = nf.diff_runs(a, b, force=True)
    assert {(t.pipeline, t.task, t.change) for t in d.tasks} == {
        ("one", "x", "only_a"),
        ("two", "y", "only_b"),
    }
    assert "only in run a" in _invoke("history", "diff", a, b, "--force")


def test_two_notebook_runs_compare_the_pipelines_in_their_kernels(tmp_path: Path) -> None:
    cell = (
        "import nbflow as nf\n"
        "p = nf.Pipeline('in_kernel')\n"
        "p.task(lambda rows: list(range(rows)), name='load')\n"
        "p.run(params={'rows': rows})"
    )
    nb = write_notebook(tmp_path / "report.ipynb", parameters="rows = 2", cells=[cell])
    a = nf.run_notebook(nb, parameters={"rows": 2}).run_id
    b = nf.run_notebook(nb, parameters={"rows": 5}).run_id
    assert a and b
    d = nf.diff_runs(a, b)
    assert d.params == {"rows": (2, 5)}
    [load] = d.tasks
    assert (load.pipeline, load.task) == ("in_kernel", "load")
    assert load.params == ("parameter `rows` changed: 2 → 5",)
    assert "task `in_kernel.load`: parameter `rows` changed: 2 → 5" in str(d)


def test_two_job_runs_name_the_parameter_and_the_task_in_the_notebook(tmp_path: Path) -> None:
    cell = (
        "import nbflow as nf\n"
        "p = nf.Pipeline('nightly_tasks')\n"
        "p.task(lambda rows: list(range(rows)), name='load')\n"
        "p.run(params={'rows': rows})"
    )
    nb = write_notebook(tmp_path / "job.ipynb", parameters="rows = 2", cells=[cell])
    _invoke("schedule", "add", "nightly", str(nb), "--cron", "0 2 * * *")
    _invoke("trigger", "nightly", "-p", "rows", "2")
    _invoke("trigger", "nightly", "-p", "rows", "3")
    b, a = nf.history("nightly", kind="job")
    assert a.env is not None and a.env["source"]["path"] == str(nb)
    out = _invoke("history", "diff", a.id, b.id)
    assert re.search(r"parameter +rows +2 +3", out)
    assert "nightly_tasks.load   parameter `rows` changed: 2 → 3" in out

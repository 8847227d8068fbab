"""notebook_task: a notebook in a pipeline, fed by upstream values, cached by its code cells."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core.errors import ParameterError
from nbflow.core.result import RunFailed
from nbflow.jobs.notebook import NotebookFailed
from nbflow.jobs.notebook_task import notebook_code_digest
from nbflow.jobs.parameters import UnknownParameterError
from tests.conftest import FIXTURES

SUMS = FIXTURES / "notebooks" / "sums_upstream_values.ipynb"


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    """A private copy of the fixture, to edit."""
    copy = tmp_path / "sums.ipynb"
    shutil.copy(SUMS, copy)
    return copy


def edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)


def build(pipe: Pipeline, notebook: Path) -> None:
    @pipe.task
    def numbers() -> list[int]:
        return [1, 2, 3]

    nf.notebook_task(
        notebook,
        name="summary",
        inputs={"values": "numbers"},
        parameters={"scale": 10},
        pipeline=pipe,
    )

    @pipe.task
    def report(summary: dict) -> str:
        return f"{summary['count']} values, total {summary['total']}"


def test_upstream_values_arrive_and_recorded_outputs_are_the_value(
    pipe: Pipeline, notebook: Path, home: Path
) -> None:
    build(pipe, notebook)
    assert pipe.upstream("report") == {"summary", "numbers"}
    r = pipe.run(["report"])
    assert r["summary"] == {"total": 60, "count": 3}
    assert r["report"] == "3 values, total 60"
    assert r.executed == ["numbers", "summary", "report"]
    # the executed notebook is kept in the home
    assert len(list((home / "runs" / "tasks").glob("summary-*.ipynb"))) == 1

    # a second run starts no kernel: everything is cached
    r = pipe.run(["report"])
    assert r.executed == [] and set(r.cached) >= {"summary", "report"}


def test_markdown_output_and_metadata_edits_do_not_invalidate_but_code_edits_do(
    pipe: Pipeline, notebook: Path
) -> None:
    build(pipe, notebook)
    pipe.run(["summary"])

    def cosmetic(nb: nbformat.NotebookNode) -> None:
        nb.cells[0].source = "# A different title\n\nand prose"
        code = nb.cells[2]
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="old output\n")]
        code.execution_count = 42
        code.metadata["collapsed"] = True
        nb.metadata["authors"] = [{"name": "someone"}]
        # comments and formatting are not code either
        code.source = code.source.replace(
            "total = sum(values) * scale", "total = sum( values )*scale  # why"
        )

    edit(notebook, cosmetic)
    assert pipe.status()["summary"].state == "fresh"
    assert pipe.run(["summary"]).executed == []

    def real(nb: nbformat.NotebookNode) -> None:
        nb.cells[2].source = nb.cells[2].source.replace("*scale", "*scale + 1")

    edit(notebook, real)
    assert pipe.explain("summary").endswith("notebook code changed")
    r = pipe.run(["report"])
    assert r.executed == ["summary", "report"]  # `numbers` is upstream: untouched
    assert r["summary"]["total"] == 61


def test_fixed_parameters_and_the_kernel_count_in_the_key(pipe: Pipeline, notebook: Path) -> None:
    build(pipe, notebook)
    pipe.run(["summary"])
    nf.notebook_task(
        notebook,
        name="summary",
        inputs={"values": "numbers"},
        parameters={"scale": 2},
        pipeline=pipe,
    )
    assert "notebook parameters changed" in pipe.explain("summary")
    assert pipe.run(["summary"])["summary"]["total"] == 12


def test_undeclared_parameters_are_run_parameters(pipe: Pipeline, notebook: Path) -> None:
    @pipe.task
    def numbers() -> list[int]:
        return [4]

    nf.notebook_task(notebook, name="summary", inputs={"values": "numbers"}, pipeline=pipe)
    assert pipe.run(["summary"], params={"scale": 3})["summary"]["total"] == 12


def test_a_failing_notebook_fails_the_task_naming_the_cell(pipe: Pipeline) -> None:
    nf.notebook_task(FIXTURES / "notebooks" / "broken_cell.ipynb", name="broken", pipeline=pipe)
    with pytest.raises(RunFailed) as info:
        pipe.run(["broken"])
    assert isinstance(info.value.error, NotebookFailed)
    assert "exception in cell 2 `import nbflow as nf`: ZeroDivisionError" in str(info.value)


def test_bad_definitions_fail_at_definition(pipe: Pipeline, notebook: Path) -> None:
    with pytest.raises(
        UnknownParameterError, match=r"no parameter `valuez` \(did you mean `values`"
    ):
        nf.notebook_task(notebook, inputs={"valuez": "numbers"}, pipeline=pipe)
    with pytest.raises(ParameterError, match=r"`scale` .* declared as int"):
        nf.notebook_task(notebook, parameters={"scale": "10"}, pipeline=pipe)
    assert pipe.tasks == {}


def test_the_code_digest_ignores_everything_but_code(notebook: Path, tmp_path: Path) -> None:
    before = notebook_code_digest(notebook)

    def injected(nb: nbformat.NotebookNode) -> None:
        cell = nbformat.v4.new_code_cell("scale = 99")
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(2, cell)
        nb.cells.append(nbformat.v4.new_markdown_cell("more prose"))

    edit(notebook, injected)
    assert notebook_code_digest(notebook) == before

    def magic(nb: nbformat.NotebookNode) -> None:
        nb.cells.append(nbformat.v4.new_code_cell("%time x = 1\n!echo hi"))

    edit(notebook, magic)
    with_magic = notebook_code_digest(notebook)
    assert with_magic != before

    def magic_reformatted(nb: nbformat.NotebookNode) -> None:
        nb.cells[-1].source = "%time x = 1\n!echo hi   "

    edit(notebook, magic_reformatted)
    assert notebook_code_digest(notebook) == with_magic


EDITED = FIXTURES / "notebooks" / "edited_in_place.ipynb"


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    copy = tmp_path / "edited.ipynb"
    shutil.copy(EDITED, copy)
    return copy


def test_a_same_size_edit_whose_mtime_is_kept_still_reruns(pipe: Pipeline, edited: Path) -> None:
    nf.notebook_task(edited, name="constant", pipeline=pipe)
    assert pipe.run(["constant"])["constant"]["a"] == 1

    # What `cp -p`, `rsync -a` or some `git checkout`s do: new content, same size, same mtime.
    before = edited.stat()
    text = edited.read_bytes()
    assert text.count(b'"a = 1"') == 1
    edited.write_bytes(text.replace(b'"a = 1"', b'"a = 2"'))
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = edited.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    assert pipe.status()["constant"].state == "stale"
    assert pipe.explain("constant").endswith("notebook code changed")
    r = pipe.run(["constant"])
    assert r.executed == ["constant"] and r["constant"]["a"] == 2  # never the old value


@pytest.fixture
def marked_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A second installed kernel, `marked`: this Python, with NBFLOW_TEST_KERNEL=marked."""
    spec = tmp_path / "jupyter" / "kernels" / "marked"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Marked", "language": "python"}
    kernel["env"] = {"NBFLOW_TEST_KERNEL": "marked"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "marked"


@pytest.mark.parametrize("force", [False, True])
def test_the_kernelspec_is_read_at_each_run_not_at_registration(
    pipe: Pipeline, edited: Path, marked_kernel: str, force: bool
) -> None:
    nf.notebook_task(edited, name="constant", pipeline=pipe)
    assert pipe.run(["constant"])["constant"]["kernel"] == "default"

    def switch(nb: nbformat.NotebookNode) -> None:
        nb.metadata["kernelspec"] = {**nb.metadata["kernelspec"], "name": marked_kernel}

    edit(edited, switch)
    if not force:
        assert pipe.explain("constant").endswith("notebook kernel changed")
    r = pipe.run(["constant"], force=force)
    assert r.executed == ["constant"]
    assert r["constant"]["kernel"] == "marked"  # the kernel the notebook names now
    assert pipe.status()["constant"].state == "fresh"


def test_a_kernel_given_at_registration_stays_fixed(
    pipe: Pipeline, edited: Path, marked_kernel: str
) -> None:
    nf.notebook_task(edited, name="constant", pipeline=pipe, kernel=marked_kernel)
    assert pipe.run(["constant"])["constant"]["kernel"] == "marked"

    def switch(nb: nbformat.NotebookNode) -> None:
        nb.metadata["kernelspec"] = {**nb.metadata["kernelspec"], "name": "python3"}

    edit(edited, switch)
    assert pipe.status()["constant"].state == "fresh"  # the notebook's kernelspec does not count


def test_an_edit_between_planning_and_running_never_caches_under_the_old_key(
    pipe: Pipeline, edited: Path
) -> None:
    # A task that runs first edits the notebook, as a person saving it in Jupyter during
    # a long run would: the notebook task's key was made at planning, from `a = 1`.
    @pipe.task
    def save_an_edit() -> None:
        edited.write_bytes(edited.read_bytes().replace(b'"a = 1"', b'"a = 2"'))

    nf.notebook_task(edited, name="constant", pipeline=pipe)
    with pytest.raises(RunFailed, match=r"`edited\.ipynb` changed after this run was planned"):
        pipe.run(["save_an_edit", "constant"])

    # Had `a = 2` run under the key of `a = 1`, undoing the edit would now serve 2.
    edited.write_bytes(edited.read_bytes().replace(b'"a = 2"', b'"a = 1"'))
    assert pipe.run(["constant"])["constant"]["a"] == 1


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_an_edit_between_runs_runs_the_new_code_with_any_executor(
    pipe: Pipeline, edited: Path, executor: str
) -> None:
    # The check above compares with the reading the plan made, which travels with the
    # task to a worker process: an edit made before planning is never mistaken for one after.
    nf.notebook_task(edited, name="constant", pipeline=pipe)
    assert pipe.run(["constant"], executor=executor)["constant"]["a"] == 1
    edited.write_bytes(edited.read_bytes().replace(b'"a = 1"', b'"a = 2"'))
    assert pipe.run(["constant"], executor=executor)["constant"]["a"] == 2
    edited.write_bytes(edited.read_bytes().replace(b'"a = 2"', b'"a = 1"'))
    r = pipe.run(["constant"], executor=executor)
    assert r.cached == ["constant"] and r["constant"]["a"] == 1  # the older result, found again

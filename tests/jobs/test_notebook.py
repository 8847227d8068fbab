"""run_notebook against real kernels: parameters, outputs, failures, timeouts, dead kernels, parallel runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import pytest

from nbflow.core.errors import JobsError, ParameterError
from nbflow.jobs.notebook import (
    KernelNotFound,
    KernelStartError,
    NotebookFailed,
    NotebookReadError,
    NotebookRun,
    run_notebook,
)
from tests.conftest import FIXTURES, ROOT

NOTEBOOKS = FIXTURES / "notebooks"


def executed(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def banner_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [
        i
        for i, c in enumerate(nb.cells)
        if "papermill-error-cell-tag" in c.metadata.get("tags", [])
    ]


def test_parameters_arrive_faithfully_and_outputs_come_back(home: Path, tmp_path: Path) -> None:
    hostile = "x\"); import os; os.system(\"echo pwned\")  #\n'''"
    given = {
        "title": hostile,
        "ratio": 2,
        "day": dt.date(2023, 5, 6),
        "price": Decimal("0.30"),
        "folder": Path("out dir"),
        "span": (3, 4),
        "codes": {5},
        "limits": {"low": -1, "high": None},
        "region": ["north", {"nested": (1,)}],
    }
    out = tmp_path / "out" / "typed.ipynb"
    nr = run_notebook(NOTEBOOKS / "typed_parameters.ipynb", given, output=out)
    assert nr.ok, nr.error
    assert nr.output_path == out and out.exists()
    for name, value in given.items():
        assert nr.outputs[name] == value
        assert nr.outputs[f"{name}:type"] == type(value).__name__
    assert nr.outputs["rows"] == 10  # defaults kept where nothing was passed
    assert nr.duration > 0

    nb = executed(out)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    # papermill's convention: the injected cell sits right after the `parameters` cell
    assert tags[1] == ["parameters"] and tags[2] == ["injected-parameters"]
    assert nb.metadata.papermill["input_path"].endswith("typed_parameters.ipynb")
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    # the input notebook is untouched
    assert all(not c.get("outputs") for c in executed(NOTEBOOKS / "typed_parameters.ipynb").cells)


def test_recorded_outputs_and_the_kernels_environment(home: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    work = tmp_path / "elsewhere"
    work.mkdir()
    nr = run_notebook(
        NOTEBOOKS / "records_outputs.ipynb",
        {"n": 2},
        output=tmp_path / "out.ipynb",
        cwd=work,
        progress=lambda done, total, **cell: seen.append((done, total)),
    )
    assert nr.ok, nr.error
    out = nr.outputs
    assert out["count"] == 20  # recorded twice: last wins
    assert out["names"] == ["a", "b"] and out["pair"] == (1, 2)
    assert out["nested"] == {"k": [1, 2.5, None, True]}
    pd.testing.assert_frame_equal(out["frame"], pd.DataFrame({"x": [0, 1]}))
    assert type(out["point"]).__name__ == "Point" and out["point"].y == 2
    assert out["home"] == str(home)  # the caller's home, absolute
    assert out["cwd"] == str(work)
    assert seen == [(1, 3), (2, 3), (3, 3)]  # parameters, injected, body
    assert not list((home / "runs").glob("record-*"))  # the side channel is cleaned up


def test_default_output_goes_under_the_homes_runs_folder(home: Path) -> None:
    nr = run_notebook(NOTEBOOKS / "trivial.ipynb")
    assert nr.ok
    assert nr.output_path.parent == home / "runs" / "adhoc"
    assert nr.output_path.name.startswith("trivial-") and nr.output_path.exists()
    # Output notebooks may hold data: the folders nbflow makes are private.
    for folder in (home / "runs", home / "runs" / "adhoc"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    # the default working directory is the notebook's folder, as in Jupyter
    assert nr.input_path == NOTEBOOKS / "trivial.ipynb"


def test_a_failing_cell_is_reported_with_its_index_and_traceback(tmp_path: Path) -> None:
    out = tmp_path / "broken.ipynb"
    nr = run_notebook(NOTEBOOKS / "broken_cell.ipynb", output=out)
    assert not nr.ok
    err = nr.error
    assert err is not None and err.reason == "exception"
    assert err.cell_index == 2  # in the input notebook (the markdown cell counts)
    assert err.ename == "ZeroDivisionError" and err.evalue == "division by zero"
    assert err.first_line == "import nbflow as nf"  # the failing cell's, not its neighbour's
    assert "result = 1 / divisor" in err.traceback and "\x1b[" not in err.traceback
    assert nr.outputs == {"before": "ran"}  # what was recorded before the failure
    nb = executed(out)
    assert len(banner_cells(nb)) == 2  # papermill's banner on top and its anchor
    assert nb.cells[-1].execution_count is None  # nothing after the failure ran
    with pytest.raises(
        NotebookFailed,
        match=r"broken_cell\.ipynb` failed: exception in cell 2 `import nbflow as nf`",
    ):
        nr.raise_for_failure()


def test_cells_are_numbered_as_in_the_input_also_when_it_carries_error_markers(
    tmp_path: Path,
) -> None:
    # The output notebook of an earlier failed run: papermill's banner is cell 0 and its
    # anchor cell 4, the failing cell is cell 5 (3 once the markers are taken out).
    source = NOTEBOOKS / "carries_error_markers.ipynb"
    cells = executed(source).cells
    assert banner_cells(executed(source)) == [0, 4]
    assert cells[5].source.startswith("import nbflow as nf")
    seen: list[tuple[int | None, str]] = []
    nr = run_notebook(
        source,
        {"divisor": 0},
        output=tmp_path / "again.ipynb",
        progress=lambda done, total, *, cell, first_line: seen.append((cell, first_line)),
    )
    assert nr.error is not None and nr.error.reason == "exception"
    assert nr.error.cell_index == 5
    assert str(nr.error).startswith("exception in cell 5 `import nbflow as nf`: ZeroDivisionError")
    # progress names the same cells by the same numbers; the injected cell has none
    assert seen == [
        (2, "divisor = 0  # 0 makes cell 5 fail"),
        (None, "# Parameters"),
        (5, "import nbflow as nf"),
    ]
    assert len(banner_cells(executed(nr.output_path))) == 2  # the old markers replaced, not kept


def test_an_nbformat_4_4_notebook_is_upgraded_so_its_output_validates_and_runs_again(
    tmp_path: Path,
) -> None:
    source = NOTEBOOKS / "nbformat_4_4.ipynb"
    assert executed(source).nbformat_minor == 4  # the fixture has no cell ids
    first = run_notebook(source, {"n": 2}, output=tmp_path / "first.ipynb")
    assert first.ok, first.error
    nb = executed(first.output_path)
    nbformat.validate(nb)  # the injected cell's id would be unexpected in 4.4
    assert nb.nbformat_minor == 5 and all(c.get("id") for c in nb.cells)  # as papermill does
    assert nb.metadata.papermill["version"] == papermill.__version__

    # the output is itself a valid input: run it again, its injected cell replaced
    again = run_notebook(first.output_path, {"n": 3}, output=tmp_path / "again.ipynb")
    assert again.ok, again.error
    assert again.outputs == {"n": 3}
    nbformat.validate(executed(again.output_path))


@pytest.mark.parametrize("exit_args", [[], [0], [None], [False]])
def test_sys_exit_with_a_clean_code_stops_the_notebook_and_says_where(
    tmp_path: Path, exit_args: list[Any]
) -> None:
    out = tmp_path / "exits.ipynb"
    nr = run_notebook(NOTEBOOKS / "exits_early.ipynb", {"exit_args": exit_args}, output=out)
    # A deliberate stop is no failure, but the result says that not every cell ran.
    assert nr.ok and nr.error is None
    assert nr.exited_at == 3
    assert nr.outputs == {"before": "ran"}
    nb = executed(out)
    assert not banner_cells(nb)
    # the output has the injected cell after cell 1: cell 3 of the input is its fifth
    assert nb.cells[4].outputs[0].ename == "SystemExit"
    assert nb.cells[5].execution_count is None


@pytest.mark.parametrize(("exit_args", "evalue"), [([3], "3"), (["bye"], "bye"), ([True], "True")])
def test_sys_exit_with_a_non_zero_code_is_a_failure(
    tmp_path: Path, exit_args: list[Any], evalue: str
) -> None:
    nr = run_notebook(
        NOTEBOOKS / "exits_early.ipynb", {"exit_args": exit_args}, output=tmp_path / "o.ipynb"
    )
    assert not nr.ok and nr.exited_at is None
    assert nr.error is not None and nr.error.reason == "exception"
    assert (nr.error.cell_index, nr.error.ename, nr.error.evalue) == (3, "SystemExit", evalue)
    assert nr.outputs == {"before": "ran"}


def test_a_notebook_that_runs_to_its_end_has_not_exited(tmp_path: Path) -> None:
    nr = run_notebook(NOTEBOOKS / "trivial.ipynb", output=tmp_path / "o.ipynb")
    assert nr.ok and nr.exited_at is None


def test_a_4_4_output_with_an_id_written_by_an_earlier_nbflow_runs_again(tmp_path: Path) -> None:
    # Before the upgrade, the injected cell of a 4.4 notebook got an id its schema rejects.
    broken = json.loads((NOTEBOOKS / "nbformat_4_4.ipynb").read_text())
    injected = {"cell_type": "code", "execution_count": 1, "id": "0a1b2c3d", "outputs": []}
    injected["metadata"] = {"tags": ["injected-parameters"]}
    injected["source"] = "n = 5\n"
    broken["cells"].insert(2, injected)
    old = tmp_path / "old_output.ipynb"
    old.write_text(json.dumps(broken))
    with pytest.raises(nbformat.ValidationError, match="'id' was unexpected"):
        nbformat.validate(nbformat.reader.reads(old.read_text()))
    nr = run_notebook(old, {"n": 6}, output=tmp_path / "again.ipynb")
    assert nr.ok, nr.error
    assert nr.outputs == {"n": 6}


def test_the_timeout_bounds_the_whole_run_kills_the_kernel_and_keeps_what_ran(
    tmp_path: Path,
) -> None:
    out = tmp_path / "slow.ipynb"
    nr = run_notebook(NOTEBOOKS / "sleeps_forever.ipynb", output=out, timeout=2)
    assert not nr.ok
    assert nr.error is not None and nr.error.reason == "timeout"
    assert nr.error.cell_index == 2 and "timeout of 2 s" in nr.error.evalue
    # the same numbering as errors and progress, with the cell's first line
    assert "(stopped in cell 2 `import time`)" in nr.error.evalue
    assert str(nr.error).startswith("timeout in cell 2 `import time`: TimeoutError")
    assert nr.outputs["started"] is True and "finished" not in nr.outputs
    with pytest.raises(ProcessLookupError):
        os.kill(nr.outputs["pid"], 0)  # the kernel is gone, not left sleeping
    nb = executed(out)
    assert banner_cells(nb)  # shifts the cells by one in the output
    assert nb.cells[2].execution_count is not None  # the cell before the slow one was saved
    stopped = next(c for c in nb.cells if c.get("outputs") and c.outputs[-1].get("ename"))
    assert stopped.source.startswith("import time")
    assert nr.error.execution_count == stopped.execution_count  # its own, not a neighbour's
    assert nb.cells[-1].execution_count is None


@pytest.mark.timeout(60)
def test_a_kernel_killed_with_sigkill_is_reported_not_hung(tmp_path: Path) -> None:
    out = tmp_path / "killed.ipynb"
    nr = run_notebook(NOTEBOOKS / "kills_own_kernel.ipynb", output=out)
    assert not nr.ok
    assert nr.error is not None and nr.error.reason == "kernel died"
    assert nr.error.cell_index == 2 and "kernel died" in nr.error.evalue
    assert "while running cell 2 `" in nr.error.evalue
    nb = executed(out)
    assert banner_cells(nb)
    assert nb.cells[-1].execution_count is None


def test_four_notebooks_at_once_use_their_own_ipc_sockets(tmp_path: Path) -> None:
    meet = tmp_path / "meet"
    meet.mkdir()
    results: dict[str, NotebookRun] = {}

    def one(label: str) -> None:
        results[label] = run_notebook(
            NOTEBOOKS / "reports_process.ipynb",
            {"label": label, "meet": str(meet), "runs": 4},
            output=tmp_path / f"{label}.ipynb",
        )

    threads = [threading.Thread(target=one, args=(label,)) for label in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list("abcd")
    for label, nr in results.items():
        assert nr.ok, nr.error
        assert nr.outputs["label"] == label
        assert nr.outputs["met"] == 4  # all four kernels were alive at the same time
        assert nr.outputs["transport"] == "ipc"  # no TCP port to collide on
    assert len({nr.outputs["pid"] for nr in results.values()}) == 4
    assert len({nr.outputs["ip"] for nr in results.values()}) == 4


# --- bad input ----------------------------------------------------------------------------


def test_unknown_kernel_lists_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(
        KernelNotFound, match=r"no Jupyter kernel named `pyton3` \(did you mean `python3`"
    ) as info:
        run_notebook(NOTEBOOKS / "trivial.ipynb", output=tmp_path / "o.ipynb", kernel="pyton3")
    assert "python3" in info.value.installed


def test_a_kernel_whose_program_is_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "jupyter" / "kernels" / "ghost"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    str(tmp_path / "no-such-python"),
                    "-m",
                    "ipykernel",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "Ghost",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    with pytest.raises(KernelStartError, match=r"kernel `ghost` could not start: .*no-such-python"):
        run_notebook(NOTEBOOKS / "trivial.ipynb", output=tmp_path / "o.ipynb", kernel="ghost")


def test_malformed_notebook_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookReadError, match=r"malformed\.ipynb"):
        run_notebook(NOTEBOOKS / "malformed.ipynb", output=tmp_path / "o.ipynb")


def test_never_executes_in_place(tmp_path: Path) -> None:
    copy = tmp_path / "mine.ipynb"
    copy.write_bytes((NOTEBOOKS / "trivial.ipynb").read_bytes())
    before = copy.read_bytes()
    with pytest.raises(JobsError, match="never executes a notebook in place"):
        run_notebook(copy, output=copy)
    with pytest.raises(JobsError, match="never executes a notebook in place"):
        run_notebook(copy, output=tmp_path / "sub" / ".." / "mine.ipynb")
    assert copy.read_bytes() == before


def test_bad_parameters_fail_before_any_kernel_starts(tmp_path: Path) -> None:
    out = tmp_path / "o.ipynb"
    with pytest.raises(ParameterError, match=r"no parameter `rowz` \(did you mean `rows`"):
        run_notebook(NOTEBOOKS / "typed_parameters.ipynb", {"rowz": 1}, output=out)
    with pytest.raises(ParameterError, match=r"`rows` .* declared as int but was given a str"):
        run_notebook(NOTEBOOKS / "typed_parameters.ipynb", {"rows": "1"}, output=out)
    with pytest.raises(ParameterError, match=r"`region` is a `builtins\.object`"):
        run_notebook(NOTEBOOKS / "typed_parameters.ipynb", {"region": object()}, output=out)
    # a quoted annotation checks like an unquoted one
    with pytest.raises(ParameterError, match=r"`limit` .* declared as int but was given a str"):
        run_notebook(NOTEBOOKS / "quoted_annotations.ipynb", {"limit": "ten"}, output=out)
    assert not out.exists()


def test_a_pipeline_inside_the_notebook_shares_the_callers_cache(
    home: Path, tmp_path: Path
) -> None:
    shared = ROOT / "notebooks" / "shared_cache.ipynb"
    first = run_notebook(shared, {"rate": 0.2}, output=tmp_path / "1.ipynb")
    assert first.ok, first.error
    assert first.outputs["executed"] == ["sales", "working_days", "taxed", "per_day"]
    assert (home / "cache").is_dir()  # the caller's home holds the pipeline's cache

    again = run_notebook(shared, {"rate": 0.2}, output=tmp_path / "2.ipynb")
    assert again.outputs["executed"] == []  # a new kernel, and nothing recomputed
    assert again.outputs["per_day"] == first.outputs["per_day"]

    new_rate = run_notebook(shared, {"rate": 0.25}, output=tmp_path / "3.ipynb")
    assert new_rate.outputs["executed"] == ["taxed", "per_day"]  # only what takes `rate`
    assert sorted(new_rate.outputs["cached"]) == ["sales", "working_days"]
    assert new_rate.outputs["per_day"] != first.outputs["per_day"]

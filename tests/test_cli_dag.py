"""`nbflow dag`: the graph of a module's or a notebook's pipeline, written to a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from tests.conftest import ROOT

MODULE = """
import nbflow as nf

etl = nf.Pipeline("etl", cache_dir="cache")

@etl.task
def extract():
    return [1, 2, 3]

@etl.task
def report(extract):
    return sum(extract)
"""


def nbflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbflow.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_dag_of_a_module_is_an_svg_coloured_by_status(tmp_path: Path):
    (tmp_path / "etl.py").write_text(MODULE)
    done = nbflow("dag", "etl.py", "-o", "etl.svg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pipeline `etl`: 2 tasks (2 never run) -> etl.svg"
    svg = (tmp_path / "etl.svg").read_text()
    assert svg.count('class="node"') == 2 and ">extract<" in svg and ">report<" in svg


def _notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def test_dag_of_a_notebook_defines_its_tasks_and_runs_none(tmp_path: Path):
    """Drawing the graph must not write to the user's warehouse: no task body runs, whether
    the notebook calls nf.run(), pipe.run() or has %%task cells; a parameter still reaches it."""
    marks = tmp_path / "marks"
    marks.mkdir()
    nb = _notebook(
        tmp_path / "etl.ipynb",
        "import nbflow as nf\n%load_ext nbflow\nfrom pathlib import Path\n"
        f"MARKS = Path({str(marks)!r})",
        "@nf.task\ndef extract(day: str):\n    (MARKS / 'extract').write_text(day)\n"
        "    return [1, 2, 3]",
        "r = nf.run(params={'day': day})\nr['extract']",
        "%%task load\n(MARKS / 'load').write_text('x')\nrows = len(extract)",
        "print(rows)  # needs the run's value: fails, and the definitions go on",
        "@nf.task\ndef report(extract):\n    (MARKS / 'report').write_text('x')\n",
        "nf.run(params={'day': day})",
        parameters="day = '2024-01-01'",
    )
    done = nbflow("dag", str(nb), "-p", "day", "2024-02-02", "-o", "etl.dot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert list(marks.iterdir()) == [], "no task may run to draw the graph"
    assert done.stdout.strip() == "pipeline `default`: 3 tasks (3 never run) -> etl.dot"
    dot = (tmp_path / "etl.dot").read_text()
    assert "load [" in dot and "extract -> report" in dot


def test_dag_of_a_notebook_shows_what_is_cached_as_fresh(tmp_path: Path):
    """After a real run of the notebook, its graph shows the tasks fresh (planned, not run)."""
    run = nbflow("run", str(ROOT / "notebooks" / "magics.ipynb"), "-o", "m.ipynb", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    done = nbflow("dag", str(ROOT / "notebooks" / "magics.ipynb"), "-o", "m.dot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pipeline `default`: 3 tasks (3 fresh)" in done.stdout
    dot = (tmp_path / "m.dot").read_text()
    assert "extract -> big" in dot and "big -> summary" in dot


def test_dag_of_a_notebook_refuses_an_unknown_parameter(tmp_path: Path):
    nb = _notebook(tmp_path / "p.ipynb", "import nbflow as nf", parameters="day = '2024-01-01'")
    done = nbflow("dag", str(nb), "-p", "dya", "x", cwd=tmp_path)
    assert done.returncode == 2
    assert "dya" in done.stderr and "day" in done.stderr


def test_several_pipelines_need_a_choice_and_unknown_ones_are_named(tmp_path: Path):
    (tmp_path / "two.py").write_text(
        MODULE + "\nother = nf.Pipeline('other', cache_dir='c2')\nother.task(lambda: 1, name='x')\n"
    )
    done = nbflow("dag", "two.py", cwd=tmp_path)
    assert done.returncode != 0
    assert "defines 2 pipelines (etl, other); choose one with --pipeline NAME" in done.stderr
    done = nbflow("dag", "two.py", "--pipeline", "etk", cwd=tmp_path)
    assert "has no pipeline `etk`" in done.stderr and "etl" in done.stderr
    done = nbflow("dag", "two.py", "--pipeline", "other", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "two-dag.svg").exists()

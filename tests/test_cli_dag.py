"""`nbflow dag`: the graph of a module's or a notebook's pipeline, written to a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert done.stdout.strip() == "pipeline `etl`: 2 tasks (2 never-run) -> etl.svg"
    svg = (tmp_path / "etl.svg").read_text()
    assert svg.count('class="node"') == 2 and ">extract<" in svg and ">report<" in svg


def test_dag_of_a_notebook_runs_it_and_reports_its_pipeline(tmp_path: Path):
    done = nbflow("dag", str(ROOT / "notebooks" / "magics.ipynb"), "-o", "m.dot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pipeline `default`: 3 tasks (3 fresh)" in done.stdout
    dot = (tmp_path / "m.dot").read_text()
    assert "extract -> big" in dot and "big -> summary" in dot


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

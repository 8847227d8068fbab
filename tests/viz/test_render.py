"""Graphviz lays a graph out once; states recolour the laid-out SVG without a new layout; a
missing `dot` is a clear error. No IPython is needed (the CLI and the dashboard draw too)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import nbflow as nf
from nbflow.viz import render


def _pipe(tmp_path) -> nf.Pipeline:
    pipe = nf.Pipeline("drawn", cache_dir=tmp_path / "cache")
    pipe.task(lambda: 1, name="raw")
    pipe.task(lambda raw: raw + 1, name="clean")
    return pipe


def test_recolouring_fills_each_node_by_its_state_in_one_layout(tmp_path) -> None:
    nodes, edges, groups = render.shape_of(_pipe(tmp_path))
    assert nodes == ("raw", "clean") and edges == (("raw", "clean"),)
    laid = render.layout(nodes, edges, groups)
    svg = laid.static_svg({"raw": "done", "clean": "failed"})
    assert svg.startswith("<svg") and "<title>raw</title>" in svg
    assert render.colour("done") in svg and render.colour("failed") in svg
    assert render.colour("never-run") not in laid.static_svg({"raw": "done", "clean": "done"})


def test_to_dot_is_coloured_by_the_current_status(tmp_path) -> None:
    pipe = _pipe(tmp_path)
    pipe.run()
    source = pipe.to_dot().source
    assert source.count(render.colour("fresh")) == 2  # both ran: both fresh now
    assert render.colour("stale") not in source
    edited = pipe.to_dot({"raw": "fresh", "clean": "stale"}).source
    assert render.colour("stale") in edited


def test_drawing_loads_no_ipython(tmp_path) -> None:
    code = (
        "import nbflow as nf, sys; p = nf.Pipeline('x', cache_dir=None); "
        "p.task(lambda: 1, name='a'); from nbflow.viz import render; "
        "render.layout(*render.shape_of(p)); print('IPython' in sys.modules)"
    )
    env = {**os.environ, "NBFLOW_HOME": str(tmp_path / "h")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_without_dot_the_error_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no `dot` on it: the real lookup
    with pytest.raises(render.GraphvizMissing, match="Graphviz"):
        render.layout(("a", "b"), (("a", "b"),))

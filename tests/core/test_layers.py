"""The engine never loads Jupyter: scripts, papermill jobs and workers stay light."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

JUPYTER_MODULES = ("IPython", "ipywidgets", "graphviz", "anywidget", "papermill", "nbformat")


def _pythonpath() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": path} if path else {}


@pytest.mark.parametrize(
    "statement",
    [
        "import nbflow.core.pipeline.pipeline, nbflow.core.run.runner, nbflow.core.cache.store",
        "import nbflow as nf; p = nf.Pipeline('x'); p.task(lambda: 1, name='a'); p.run()",
    ],
)
def test_core_imports_no_jupyter(statement: str, tmp_path) -> None:
    code = f"{statement}\nimport sys\nprint(','.join(m for m in {JUPYTER_MODULES!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"NBFLOW_HOME": str(tmp_path / "h"), "PATH": "", **_pythonpath()},
    )
    assert out.stdout.strip() == ""


def test_public_surface_matches_all() -> None:
    import nbflow

    for name in [
        "task",
        "Pipeline",
        "run",
        "status",
        "explain",
        "invalidate",
        "clear_cache",
        "show",
        "RunFailed",
        "pool",
        "default_pipeline",
    ]:
        assert name in nbflow.__all__ and hasattr(nbflow, name)

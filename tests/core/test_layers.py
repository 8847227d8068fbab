"""The layers point one way (docs/architecture.md), and the engine never loads Jupyter: scripts,
papermill jobs and workers stay light."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]

# Which nbflow layers each layer may import. Read statically with ast, imports inside
# functions and under TYPE_CHECKING included, so a lazy upward import is caught as well.
LAYERS = {
    "core": {"core"},
    "history": {"core", "history"},
    "viz": {"core", "viz"},
    "jobs": {"core", "history", "viz", "jobs"},
    "jupyter": {"core", "history", "viz", "jobs", "jupyter"},
    "ui": {"core", "history", "viz", "jobs", "ui"},
}
# Inside the engine, a folder (or top-level module) imports only those of lower or equal rank:
# the definitions at the bottom, the Pipeline class on top.
CORE_RANK = {
    "types": 0,
    "errors": 0,
    "result": 1,
    "home": 1,
    "events": 1,
    "secrets": 1,
    "capture": 2,
    "dag": 2,
    "cache": 3,
    "executors": 3,
    "patterns": 4,
    "run": 5,
    "pipeline": 6,
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from nbflow.core import events` names the module nbflow.core.events
            names += [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n.startswith("nbflow.")]


def _unit(parts: list[str]) -> tuple[str, str]:
    """(layer, core unit) of a module path split on dots, without `nbflow`."""
    layer = parts[0]
    unit = parts[1] if layer == "core" and len(parts) > 1 else ""
    return layer, unit


def test_no_module_imports_a_higher_layer_or_a_higher_engine_folder() -> None:
    wrong = []
    for path in sorted((ROOT / "nbflow").rglob("*.py")):
        rel = path.relative_to(ROOT / "nbflow").with_suffix("").parts
        layer, unit = _unit(list(rel))
        if layer not in LAYERS:
            continue  # cli.py, __init__.py, __main__.py stand on top
        for name in _imports(path):
            target = name.split(".")[1:]
            t_layer, t_unit = _unit(target)
            if t_layer not in LAYERS[layer]:
                wrong.append(f"nbflow/{'/'.join(rel)}.py imports {name} (layer {t_layer})")
            elif (
                layer == "core"
                and t_layer == "core"
                and unit in CORE_RANK
                and t_unit in CORE_RANK
                and CORE_RANK[t_unit] > CORE_RANK[unit]
            ):
                wrong.append(f"nbflow/{'/'.join(rel)}.py imports {name} (core/{t_unit})")
    assert wrong == []


def test_every_engine_folder_has_a_rank() -> None:
    found = {p.stem if p.is_file() else p.name for p in (ROOT / "nbflow" / "core").iterdir()}
    found -= {"__init__", "__pycache__"}
    assert found == set(CORE_RANK), "give new core modules a rank in CORE_RANK"

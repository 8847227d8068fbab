"""`nbflow dag NOTEBOOK_OR_MODULE`: the pipeline graph of a module or a notebook, as a file.

- A Python module (`etl.py`) is imported from its path; its pipelines are the
  `nf.Pipeline` objects among its globals, and the default pipeline when
  `@nf.task` registered anything there.
- A notebook is executed through `run_notebook` (never in place) with one
  extra cell at the end that reports the graph of every pipeline it defined.
  Its tasks run as they would in any run — what is cached is not recomputed.

Each graph is coloured by its tasks' current status (fresh, stale, never run).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat

from nbflow.core.errors import JobsError, did_you_mean

_REPORT_CELL = """\
import nbflow as _nf
from nbflow.core.pipeline import Pipeline as _Pipeline, default_pipeline as _default
_pipes = {id(v): v for v in list(globals().values()) if isinstance(v, _Pipeline)}
_pipes.setdefault(id(_default()), _default())
_nf.record("__nbflow_dag__", {
    p.name: {"nodes": list(p.graph().order), "edges": [list(e) for e in p.edges()],
             "states": {n: s.state for n, s in p.status().items()}}
    for p in _pipes.values() if p.tasks
})
"""


def graphs_of_module(path: Path) -> dict[str, dict[str, Any]]:
    """Import the module at `path`; return its pipelines' graphs by pipeline name."""
    from nbflow.core.pipeline import Pipeline, default_pipeline

    name = f"_nbflow_dag_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise JobsError(f"cannot import `{path}` as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        raise JobsError(f"importing `{path}` failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    pipes = {id(v): v for v in vars(module).values() if isinstance(v, Pipeline)}
    pipes.setdefault(id(default_pipeline()), default_pipeline())
    return {
        p.name: {
            "nodes": list(p.graph().order),
            "edges": [list(e) for e in p.edges()],
            "states": {n: s.state for n, s in p.status().items()},
        }
        for p in pipes.values()
        if p.tasks
    }


def graphs_of_notebook(
    path: Path, parameters: Mapping[str, Any] | None = None, timeout: float | None = None
) -> dict[str, dict[str, Any]]:
    """Run a copy of the notebook with a reporting cell at the end; return its graphs."""
    from nbflow.jobs.notebook import read_notebook, run_notebook

    nb = read_notebook(path)
    nb.cells.append(nbformat.v4.new_code_cell(_REPORT_CELL))
    with tempfile.TemporaryDirectory(prefix="nbflow-dag-") as tmp:
        copy = Path(tmp) / path.name
        nbformat.write(nb, copy)
        run = run_notebook(
            copy,
            parameters=dict(parameters or {}),
            output=Path(tmp) / f"{path.stem}-dag.ipynb",
            timeout=timeout,
            cwd=path.parent,
        )
    if not run.ok:
        raise JobsError(f"running `{path}` to find its pipelines failed: {run.error}")
    return dict(run.outputs.get("__nbflow_dag__") or {})


def render_graph(graph: Mapping[str, Any], output: Path) -> Path:
    """Write one graph to `output`; the format follows the suffix (.svg, .png, .pdf, .dot)."""
    from nbflow.jupyter.render import GraphvizMissing, _graph_source, colour, dot_available

    nodes = tuple(graph["nodes"])
    edges = tuple(tuple(e) for e in graph["edges"])
    dot = _graph_source(nodes, edges)
    for name in nodes:
        dot.node(name, fillcolor=colour(graph["states"].get(name, "never-run")))
    fmt = output.suffix.lstrip(".").lower() or "svg"
    if fmt in ("dot", "gv"):
        output.write_text(dot.source)
        return output
    if not dot_available():
        raise GraphvizMissing()
    output.write_bytes(dot.pipe(format=fmt))
    return output


def pick(graphs: Mapping[str, Any], pipeline: str | None, where: Path) -> tuple[str, Any]:
    """The one graph to draw: the named pipeline, or the only one there is."""
    if not graphs:
        raise JobsError(f"`{where}` defines no pipeline with tasks")
    if pipeline is not None:
        if pipeline not in graphs:
            raise JobsError(
                f"`{where}` has no pipeline `{pipeline}`{did_you_mean(pipeline, graphs)}; "
                f"it has: {', '.join(graphs)}"
            )
        return pipeline, graphs[pipeline]
    if len(graphs) > 1:
        raise JobsError(
            f"`{where}` defines {len(graphs)} pipelines ({', '.join(graphs)}); "
            "choose one with --pipeline NAME"
        )
    return next(iter(graphs.items()))

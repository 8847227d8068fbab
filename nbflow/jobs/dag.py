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
from nbflow.jobs.dag import describe_pipelines as _describe_pipelines
_nf.record("__nbflow_dag__", _describe_pipelines(globals()))
"""


def describe_pipelines(namespace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The graphs (nodes, edges, sub-pipeline groups, states) of the pipelines a module or
    notebook defined: `nf.Pipeline` objects in `namespace`, and the default pipeline."""
    from nbflow.core.pipeline import Pipeline, default_pipeline
    from nbflow.jupyter.render import shape_of

    pipes = {id(v): v for v in list(namespace.values()) if isinstance(v, Pipeline)}
    pipes.setdefault(id(default_pipeline()), default_pipeline())
    graphs = {}
    for p in pipes.values():
        if p.tasks:
            nodes, edges, groups = shape_of(p)
            graphs[p.name] = {
                "nodes": list(nodes),
                "edges": [list(e) for e in edges],
                "groups": [[outer, caption, list(members)] for outer, caption, members in groups],
                "states": {n: s.state for n, s in p.status().items()},
            }
    return graphs


def graphs_of_module(path: Path) -> dict[str, dict[str, Any]]:
    """Import the module at `path`; return its pipelines' graphs by pipeline name."""
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
    return describe_pipelines(vars(module))


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
    from nbflow.jupyter.render import GraphvizMissing, dot_available, graph_to_dot

    dot = graph_to_dot(
        tuple(graph["nodes"]),
        tuple((up, down) for up, down in graph["edges"]),
        tuple((outer, caption, tuple(members)) for outer, caption, members in graph["groups"]),
        states=graph["states"],
    )
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

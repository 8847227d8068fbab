"""`nbflow dag NOTEBOOK_OR_MODULE`: the pipeline graph of a module or a notebook, as a file.

- A Python module (`etl.py`) is imported from its path; its pipelines are the
  `nf.Pipeline` objects among its globals, and the default pipeline when
  `@nf.task` registered anything there.
- A notebook's tasks are *defined, never run*: a copy of it (never the file
  itself) is executed in a kernel whose first cell stops every run before it
  starts (`Runner.run` raises), so `nf.run()`, `pipe.run()`, `%%task` cells and
  notebook tasks define and plan their tasks but execute none of them — drawing
  a graph must not write to the user's warehouse — and the cache is not
  changed (a `clear_cache()` or `invalidate()` in the notebook does nothing). The cells that need a run's
  values then fail; execution goes on past those errors (nbclient's
  `allow_errors`), and one extra cell at the end reports the graph of every
  pipeline the notebook defined. Plain cells that are not tasks do run, as
  they must for the tasks to be defined (imports, helpers, constants).

Each graph is coloured by its tasks' current status (fresh, stale, never run),
planned from the cache's metadata as `status()` does.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat

from nbflow.core.errors import JobsError, did_you_mean

_REPORT_MARK = "@@nbflow-dag@@"

# The first cell of the copy: every run stops before its first task, and the cache is
# not changed. Patching the runner (not Pipeline.run) also stops the runs that `%%task`
# cells, `nf.run` and notebook tasks start; patching the store's two writes outside a run
# keeps a notebook's own `clear_cache()` / `%nbflow clear` / `invalidate()` from emptying
# the cache the graph is coloured from.
_HOLD_RUNS_CELL = """\
import nbflow.core.run.runner as _nbflow_runner
import nbflow.core.cache.store as _nbflow_store
def _nbflow_dag_no_run(self, *args, **kwargs):
    raise RuntimeError("nbflow dag: tasks are defined and planned, never run")
_nbflow_runner.Runner.run = _nbflow_dag_no_run
_nbflow_store.DiskStore.clear = lambda self, pipeline: 0
_nbflow_store.DiskStore.update_pipeline_state = lambda self, pipeline, **changes: None
import nbflow.core.cache.fsstore as _nbflow_fsstore
_nbflow_fsstore.FsStore.clear = lambda self, pipeline: 0
_nbflow_fsstore.FsStore.update_pipeline_state = lambda self, pipeline, **changes: None
del _nbflow_runner, _nbflow_store, _nbflow_fsstore, _nbflow_dag_no_run
"""

_REPORT_CELL = f"""\
import json as _json
from nbflow.jobs.dag import describe_pipelines as _describe_pipelines
print({_REPORT_MARK!r} + _json.dumps(_describe_pipelines(globals())))
"""


def describe_pipelines(namespace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The graphs (nodes, edges, sub-pipeline groups, states) of the pipelines a module or
    notebook defined: `nf.Pipeline` objects in `namespace`, and the default pipeline."""
    from nbflow.core.pipeline.default import default_pipeline
    from nbflow.core.pipeline.pipeline import Pipeline
    from nbflow.viz.render import shape_of

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
    """Define (never run) the tasks of a copy of the notebook; return its pipelines' graphs."""
    from nbclient import NotebookClient

    from nbflow.jobs.notebook import KernelNotFound, installed_kernels, read_notebook
    from nbflow.jobs.parameters import check_parameters, parameters_from_notebook, render_parameters

    nb = read_notebook(path)
    params = dict(parameters or {})
    check_parameters(params, parameters_from_notebook(nb, path.name), path.name)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    declared = next((i for i, t in enumerate(tags) if "parameters" in t), None)
    if params:
        at = declared + 1 if declared is not None else 0
        nb.cells.insert(at, nbformat.v4.new_code_cell(render_parameters(params)))
    nb.cells.insert(0, nbformat.v4.new_code_cell(_HOLD_RUNS_CELL))
    nb.cells.append(nbformat.v4.new_code_cell(_REPORT_CELL))
    kernel = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    if kernel not in installed_kernels():
        raise KernelNotFound(kernel, installed_kernels())
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        allow_errors=True,  # a cell that needs a run's value fails; the definitions go on
        timeout=int(timeout) if timeout else None,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    report = nb.cells[-1]
    for out in report.get("outputs", []):
        text = out.get("text", "") if out.get("output_type") == "stream" else ""
        if _REPORT_MARK in text:
            graphs: dict[str, dict[str, Any]] = json.loads(text.split(_REPORT_MARK, 1)[1])
            return graphs
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    detail = f": {errors[-1]['ename']}: {errors[-1]['evalue']}" if errors else ""
    raise JobsError(f"defining the tasks of `{path}` to draw its graph failed{detail}")


def render_graph(graph: Mapping[str, Any], output: Path) -> Path:
    """Write one graph to `output`; the format follows the suffix (.svg, .png, .pdf, .dot)."""
    from nbflow.viz.render import GraphvizMissing, dot_available, graph_to_dot

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

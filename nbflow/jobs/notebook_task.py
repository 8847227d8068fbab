"""`nf.notebook_task`: a notebook as one task of a pipeline.

Policy:
- **Inputs**: the task's parameters are the notebook's declared parameters.
  Those named in `inputs=` (notebook parameter -> upstream task) receive the
  upstream task's value; those fixed with `parameters=` are always passed;
  every other declared parameter with a literal default is a run parameter
  (given with `pipe.run(params=...)`, else its default), and binds to a task
  of the same name like any function parameter would. Values travel into the
  notebook through `run_notebook`, so they must render faithfully (plain data,
  dates, paths...); anything else is a `ParameterError` naming the parameter.
- **Value**: the dict of what the notebook recorded with `nf.record`. A
  failed notebook fails the task with `NotebookFailed`, which names the cell
  and the executed output notebook (kept under `<home>/runs/tasks/`).
- **Cache key**: the normalized source of the notebook's code cells (each
  parsed and dumped as a syntax tree, so comments and formatting do not
  count; cells with IPython syntax go through IPython's transformer first),
  the kernel name and the fixed parameters, given to the core as named
  digests (`identity=`), so an explanation reads "notebook code changed".
  Markdown, outputs, execution counts and metadata never count
  (executablebooks/jupyter-cache keys notebooks the same way).
  The runner code in this module does not count: the fingerprint is pointed at
  a stub, otherwise editing nbflow itself would invalidate every notebook task.
- **Freshness follows the content.** Each plan reads the file and digests its
  bytes; only when they differ from the last reading are the cells parsed
  again. The file's (mtime, size) decides nothing: `cp -p`, `rsync -a`, some
  `git checkout`s and a same-size edit (`a = 1` -> `a = 2`) with its mtime
  restored keep both, and trusting them served the old result. Reading and
  digesting a notebook costs far less than a kernel start (blake3; about a
  millisecond for a megabyte of outputs).
- **The kernel** is the one named in the notebook's kernelspec when the
  notebook is read for a plan or a run, not when the task was registered
  (unless `kernel=` fixes it): switching the kernelspec makes the task stale
  ("notebook kernel changed"), and the run — forced or not — uses the new one.
- **What runs is what was planned.** When the notebook's code or kernel
  changed between planning and running (saved during a long run), the task
  fails with a `JobsError` saying so instead of running the new code under
  the key of the old one — a result that undoing the edit would serve.
  Edits that do not count (markdown, outputs) run as usual.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbflow.core.cache.hashing import digest_value, hash_bytes
from nbflow.core.dag.task import Task
from nbflow.core.errors import JobsError
from nbflow.core.home import home_dir
from nbflow.core.pipeline.default import default_pipeline
from nbflow.core.pipeline.pipeline import Pipeline
from nbflow.jobs.notebook import read_notebook, read_notebook_bytes, run_notebook
from nbflow.jobs.parameters import (
    NOT_A_LITERAL,
    UnknownParameterError,
    check_parameters,
    parameters_from_notebook,
    render_parameters,
)

__all__ = ["notebook_code_digest", "notebook_task"]


def notebook_task(
    path: str | Path,
    *,
    name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    pipeline: Pipeline | None = None,
    kernel: str | None = None,
    timeout: float | None = None,
    cwd: str | Path | None = None,
    **options: Any,
) -> Task:
    """Register the notebook at `path` as a task of `pipeline` (default: the default pipeline).

    `timeout` bounds each run of the notebook (the kernel is killed when it
    runs out); other keyword options (retries, tags, ...) are task options.
    """
    source = Path(path).absolute()
    nb = read_notebook(source)
    declared = parameters_from_notebook(nb, source.name)
    fixed = dict(parameters or {})
    check_parameters(fixed, declared, source.name)
    render_parameters(fixed)  # refuse a value that cannot reach the notebook now, not at run time
    bound = dict(inputs or {})
    for param in bound:
        if param not in declared:
            raise UnknownParameterError(param, declared, source.name)
    task_name = name or source.stem

    spec = _NotebookSpec(source, task_name, fixed, kernel, timeout, cwd)
    signature = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in bound]
        + [
            inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
            for p in declared.values()
            if p.name not in bound and p.name not in fixed and p.default is not NOT_A_LITERAL
        ]
    )
    execute = spec.execute

    def run_notebook_task(**values: Any) -> dict[str, Any]:
        return execute(values)

    run_notebook_task.__signature__ = signature  # type: ignore[attr-defined]
    run_notebook_task.__name__ = run_notebook_task.__qualname__ = task_name
    # The code that counts is the notebook's (through identity=), not this module's.
    run_notebook_task.__wrapped__ = _notebook_code  # type: ignore[attr-defined]
    return (pipeline or default_pipeline()).task(
        run_notebook_task,
        name=task_name,
        inputs=bound,
        identity=spec.identity,
        description=options.pop("description", None) or f"notebook {source.name}",
        **options,
    )


def _notebook_code() -> None:
    """Stands for a notebook task's code, which counts through `identity=` (see module docstring)."""


@dataclass(frozen=True)
class _Reading:
    """What a notebook's bytes say about the task: its code digest and kernel name."""

    content: str
    """Digest of the file's bytes: the reading is reused only for the same bytes."""
    code: str
    kernel: str


@dataclass
class _NotebookSpec:
    path: Path
    name: str
    fixed: dict[str, Any]
    kernel: str | None
    """The kernel given at registration; None: the notebook's kernelspec, read each time."""
    timeout: float | None
    cwd: str | Path | None
    _last: _Reading | None = field(default=None, repr=False)

    def identity(self) -> dict[str, str]:
        reading = self.read()
        return {
            "notebook code": reading.code,
            "notebook kernel": hash_bytes(reading.kernel),
            "notebook parameters": digest_value(self.fixed),
        }

    def read(self) -> _Reading:
        """The notebook as it is now (see the module docstring: content, never mtime)."""
        data = read_notebook_bytes(self.path)
        content = hash_bytes(data)
        last = self._last
        if last is not None and last.content == content:
            return last
        nb = read_notebook(self.path, data)
        kernel = self.kernel or _kernelspec_name(nb)
        self._last = _Reading(content, _code_digest(nb), kernel)
        return self._last

    def execute(self, values: dict[str, Any]) -> dict[str, Any]:
        # The key was made from the reading at planning (the last one: a plan reads the
        # notebook right before it submits the task, or at the start of the run when
        # nothing upstream has to run first). Run only that code: a result of other
        # code stored under that key would be served when the edit is undone.
        planned = self._last
        now = self.read()
        if planned is not None and (now.code, now.kernel) != (planned.code, planned.kernel):
            raise JobsError(
                f"notebook `{self.path.name}` changed after this run was planned "
                f"(its {'code' if now.code != planned.code else 'kernel'} is not what task "
                f"`{self.name}`'s cache key was made from), so it was not run; run the "
                "pipeline again to run the new version"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)
        output = home_dir() / "runs" / "tasks" / f"{safe}-{stamp}.ipynb"
        nr = run_notebook(
            self.path,
            {**self.fixed, **values},
            output=output,
            timeout=self.timeout,
            kernel=now.kernel,  # the registered one, or the kernelspec's as planned
            cwd=self.cwd,
        )
        nr.raise_for_failure()
        return dict(nr.outputs)


def notebook_code_digest(path: Path) -> str:
    """Digest of the normalized source of the notebook's code cells (see module docstring)."""
    return _code_digest(read_notebook(path))


def _kernelspec_name(nb: Any) -> str:
    # The same default as run_notebook's.
    return str(nb.metadata.get("kernelspec", {}).get("name") or "python3")


def _code_digest(nb: Any) -> str:
    parts = [
        _normalized(cell.source)
        for cell in nb.cells
        if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])
    ]
    return hash_bytes(*parts)


def _normalized(source: str) -> str:
    try:
        return ast.dump(ast.parse(source))
    except SyntaxError:
        pass
    # IPython syntax (%magic, !shell, ?help): translate to Python first, as the kernel does.
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(source)
    try:
        return ast.dump(ast.parse(python))
    except SyntaxError:
        # Broken code still counts, by its lines without trailing space.
        return "\n".join(line.rstrip() for line in source.strip().splitlines())

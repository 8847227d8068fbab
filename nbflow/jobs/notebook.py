"""`run_notebook`: execute a notebook with parameters through papermill, and say what happened.

The story of one run, top to bottom:

1. Read the notebook (an unreadable or malformed file is a `NotebookReadError`
   naming it), upgraded to nbformat 4.5 as papermill does, and refuse to
   execute it in place: the output is another file, by default
   `<home>/runs/adhoc/<stem>-<UTC timestamp>.ipynb`.
2. Check the parameters against the ones the notebook declares and render them
   ourselves (`nbflow.jobs.parameters`) into a cell tagged
   `injected-parameters`, placed where papermill puts it (after the cell
   tagged `parameters`, replacing an earlier injected cell). papermill's own
   translator would `str()` values it does not know.
3. Check the kernel name against the installed kernel specs.
4. Execute through papermill's engine machinery, with an engine of ours
   (`nbflow`) that papermill calls like its own `nbclient` engine, so the
   output notebook carries papermill's metadata, per-cell status and error
   banner. Our engine adds what papermill lacks:
   - the kernel talks over IPC sockets in a folder private to the run, not
     TCP ports, so parallel runs cannot collide on a port (papermill#511);
   - the kernel's environment carries `NBFLOW_HOME` (the caller's home, made
     absolute, so a pipeline inside shares the caller's cache) and
     `NBFLOW_RECORD_DIR` (where `nf.record` writes), and `NBFLOW_HEADLESS=1`
     (no browser is attached, so `nf.show()` draws a static graph);
   - `timeout` bounds the whole run: each cell may use only what remains,
     and when it runs out the kernel is killed and the output notebook keeps
     what ran;
   - a kernel that dies (SIGKILL, crash, out of memory) is noticed by
     nbclient's liveness poll within about a second and reported as
     "kernel died", never a hang;
   - the working directory is given to the kernel process, not set with
     `chdir` in ours, so threads running notebooks do not race on it;
   - every message from the kernel has the values of the home's secrets
     replaced by `***` before papermill puts it into the notebook, so no save
     of the output notebook (papermill's per-cell saves, its periodic
     autosave during a long cell, the final write) ever holds one
     (`nbflow.core.secrets`).
5. Collect the result: `NotebookRun.ok`, the failure (cell index in the input
   notebook, exception name, message, traceback) and the recorded outputs. A
   `sys.exit()` with a clean code (none, 0, None, False) is a deliberate early
   stop, not a failure: `ok`, with `exited_at` naming the cell.

Cells have one numbering everywhere — progress, errors, timeouts, a dead
kernel: the cell's index in the input notebook as the user has it (from 0;
markdown cells and papermill's error-marker cells of an earlier run count, the
injected cell has no number), shown with the cell's first line
(cell 5 `result = 1 / divisor`).

A failing notebook is a result (`ok` False), not an exception; bad input
(parameters, kernel name, paths, a malformed file) raises.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.execute import raise_for_execution_errors, remove_error_markers
from papermill.iorw import write_ipynb

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.core.home import create_private_file, home_dir, private_subdir
from nbflow.core.secrets import SecretError, SecretRef, mask, secret_names, secret_values
from nbflow.history.recorder import history_params, parent_env, track_run
from nbflow.jobs.notebook_file import NotebookReadError, read_notebook, read_notebook_bytes
from nbflow.jobs.parameters import check_parameters, parameters_from_notebook, render_parameters
from nbflow.jobs.record import RECORD_DIR_ENV, read_records

__all__ = [
    "KernelNotFound",
    "KernelStartError",
    "NotebookFailed",
    "NotebookFailure",
    "NotebookReadError",
    "NotebookRun",
    "read_notebook",
    "read_notebook_bytes",
    "run_notebook",
]

# nbclient logs a dead kernel or a timeout as an error; the run reports them itself,
# so they are not printed through logging's last-resort handler.
logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


class Progress(Protocol):
    """Called after each code cell: (code cells done, code cells in all), and which cell it was.

    `cell` is the cell's number as everywhere else (its index in the input
    notebook; None for the injected cell), `first_line` its first line of code.
    """

    def __call__(self, done: int, total: int, *, cell: int | None, first_line: str) -> None: ...


# --- results and errors -----------------------------------------------------------------


@dataclass(frozen=True)
class NotebookFailure:
    """Why a run stopped: which cell, what was raised, and its traceback (plain text)."""

    reason: Literal["exception", "timeout", "kernel died"]
    cell_index: int | None
    """Index of the failing cell in the input notebook, as the user wrote it (None: the
    injected cell, or no cell ran)."""
    ename: str
    evalue: str
    traceback: str
    execution_count: int | None = None
    first_line: str = ""
    """The failing cell's first line of code, shown beside its number."""

    def __str__(self) -> str:
        return (
            f"{self.reason}{_where(self.cell_index, self.first_line)}: {self.ename}: {self.evalue}"
        )


@dataclass(frozen=True)
class NotebookRun:
    """The result of `run_notebook`."""

    ok: bool
    """No cell failed: every cell ran, or the notebook stopped itself cleanly (`exited_at`)."""
    output_path: Path
    duration: float
    """Seconds, from reading the notebook to reading back its outputs."""
    error: NotebookFailure | None
    outputs: dict[str, Any] = field(default_factory=dict)
    """Values the notebook recorded with `nf.record(name, value)`."""
    input_path: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    exited_at: int | None = None
    """The number of the cell whose `sys.exit()` with a clean code (none, 0, None,
    False) stopped the notebook; the cells after it did not run. None when every
    cell ran, or when the run failed."""
    run_id: str | None = None
    """Its id in the run history (`nbflow history show RUN_ID`); the pipeline runs in its
    kernel name it as their parent."""

    def raise_for_failure(self) -> NotebookRun:
        """Raise `NotebookFailed` if the run failed; return the run otherwise."""
        if self.error is not None:
            raise NotebookFailed(self)
        return self


class NotebookFailed(JobsError):
    """A notebook run failed (raised by `NotebookRun.raise_for_failure` and notebook tasks)."""

    def __init__(self, run: NotebookRun) -> None:
        assert run.error is not None
        self.run = run
        self.failure = run.error
        self.traceback = run.error.traceback
        name = run.input_path.name if run.input_path else "notebook"
        super().__init__(
            f"notebook `{name}` failed: {run.error}; the executed notebook is {run.output_path}"
        )

    def _render_traceback_(self) -> list[str]:
        return [str(self), "", *self.traceback.rstrip("\n").splitlines()]


class KernelNotFound(JobsError):
    """No Jupyter kernel of the requested name is installed."""

    def __init__(self, kernel: str, installed: list[str]) -> None:
        self.kernel = kernel
        self.installed = installed
        listing = ", ".join(f"`{k}`" for k in installed) or "none"
        super().__init__(
            f"no Jupyter kernel named `{kernel}`{did_you_mean(kernel, installed)}; "
            f"installed kernels: {listing} (install one with "
            "`python -m ipykernel install --user --name NAME`)"
        )


class KernelStartError(JobsError):
    """The kernel spec exists, but the kernel's program could not be started."""

    def __init__(self, kernel: str, detail: str) -> None:
        self.kernel = kernel
        super().__init__(
            f"kernel `{kernel}` could not start: {detail}; check that its kernel spec "
            "(`jupyter kernelspec list`) points to an installed program"
        )


# --- the run ------------------------------------------------------------------------------


def run_notebook(
    path: str | Path,
    parameters: Mapping[str, Any] | None = None,
    output: str | Path | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    cwd: str | Path | None = None,
    *,
    progress: Progress | None = None,
    start_timeout: float = 60.0,
) -> NotebookRun:
    """Execute the notebook at `path` with `parameters` into a new output notebook.

    `timeout` bounds the whole run in seconds; `cwd` is the kernel's working
    directory (default: the notebook's folder, as in Jupyter).
    """
    started = time.monotonic()
    source = Path(path).absolute()
    if timeout is not None and timeout <= 0:
        raise JobsError(f"timeout must be a positive number of seconds, not {timeout}")
    nb = read_notebook(source)
    out = _output_path(source, output)
    params = dict(parameters or {})
    check_parameters(params, parameters_from_notebook(nb, source.name), source.name)
    kernel_name = _kernel_name(nb, kernel)
    workdir = Path(cwd).absolute() if cwd is not None else source.parent
    if not workdir.is_dir():
        raise JobsError(f"working directory `{workdir}` of the run does not exist; create it first")

    _check_secret_references(params)
    nb, origin = _inject_parameters(nb, params)
    nb.metadata.papermill["input_path"] = str(source)
    # The papermill that ran it (papermill writes it only into a notebook it never ran;
    # the input may be an older output).
    nb.metadata.papermill["version"] = papermill.__version__
    nb.metadata.papermill["output_path"] = str(out)
    home = home_dir()
    runs = home / "runs"
    if out.parent.is_relative_to(runs):
        # Folders nbflow makes in its home are private to the user, like the home, and
        # never links: a planted one must not redirect the output (nbflow.core.home).
        private_subdir(home, *out.parent.relative_to(home).parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The output notebook holds what the run printed: 0600, and never written through a link.
    created = create_private_file(out)

    with track_run(
        "notebook", source.stem, params=history_params(params), source=source
    ) as tracked:
        result = _run_recorded(
            nb,
            source,
            out,
            params,
            created,
            home,
            workdir,
            kernel_name,
            started,
            timeout,
            progress,
            start_timeout,
            origin,
            tracked.id,
        )
        tracked.output = str(out)
        tracked.outputs = history_params(result.outputs) if result.outputs else None
        if not result.ok:
            tracked.state, tracked.error = "failed", str(result.error)
    return result


def _run_recorded(
    nb: Any,
    source: Path,
    out: Path,
    params: dict[str, Any],
    created: bool,
    home: Path,
    workdir: Path,
    kernel_name: str,
    started: float,
    timeout: float | None,
    progress: Progress | None,
    start_timeout: float,
    origin: Any,
    run_id: str,
) -> NotebookRun:
    """The run itself, recorded in the history as run `run_id` by `run_notebook`."""
    records = Path(tempfile.mkdtemp(prefix="record-", dir=private_subdir(home, "runs")))
    sockets = Path(tempfile.mkdtemp(prefix="nbflow-"))  # short: AF_UNIX paths are limited
    deadline = started + timeout if timeout is not None else None
    control = _RunControl(
        # NBFLOW_HEADLESS: no browser watches this kernel, so the DAG widget
        # draws a static graph only (what the output notebook and HTML keep).
        env={
            "NBFLOW_HOME": str(home),
            RECORD_DIR_ENV: str(records),
            "NBFLOW_HEADLESS": "1",
            # The pipeline runs in the kernel link to this run, and name its notebook.
            **parent_env(run_id, source),
        },
        cwd=str(workdir),
        socket_prefix=str(sockets / "kernel"),
        deadline=deadline,
        progress=progress,
        origin=origin,
        total=sum(1 for c in nb.cells if c.cell_type == "code"),
        # Every secret of the home, not only the ones passed: a cell may call nf.secret itself.
        secrets=tuple(secret_values().values()),
    )
    try:
        stopped = _execute(nb, out, kernel_name, control, start_timeout)
        failure, exited_at = _outcome(nb, out, origin, stopped, timeout)
        outputs = read_records(records)
    finally:
        shutil.rmtree(records, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)
        if created and out.exists() and out.stat().st_size == 0:  # the engine never wrote it
            out.unlink()
    return NotebookRun(
        ok=failure is None,
        output_path=out,
        duration=time.monotonic() - started,
        error=failure,
        outputs=outputs,
        input_path=source,
        parameters=params,
        exited_at=exited_at,
        run_id=run_id,
    )


def _check_secret_references(params: Mapping[str, Any]) -> None:
    """Refuse a run whose parameters name a secret that is not stored, before a kernel starts."""
    stored = secret_names()
    for param, value in params.items():
        if isinstance(value, SecretRef) and value.name not in stored:
            raise SecretError(
                value.name,
                f"parameter `{param}` refers to secret `{value.name}`{did_you_mean(value.name, stored)}, "
                f"which is not set; set it with `nbflow secret set {value.name}`",
            )


def installed_kernels() -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


def _kernel_name(nb: nbformat.NotebookNode, kernel: str | None) -> str:
    name = kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    installed = installed_kernels()
    if name not in installed:
        raise KernelNotFound(name, installed)
    return name


def _output_path(source: Path, output: str | Path | None) -> Path:
    if output is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        out = home_dir() / "runs" / "adhoc" / f"{source.stem}-{stamp}.ipynb"
    else:
        out = Path(output).absolute()
    if out.suffix != ".ipynb":
        raise JobsError(f"output `{out}` must end in .ipynb")
    same = out.resolve() == source.resolve() or (out.exists() and out.samefile(source))
    if same:
        raise JobsError(
            f"output `{out}` is the input notebook; nbflow never executes a notebook in place "
            "(it would overwrite your notebook): choose another output path"
        )
    return out


def _inject_parameters(
    nb: nbformat.NotebookNode, params: dict[str, Any]
) -> tuple[nbformat.NotebookNode, list[int | None]]:
    """The notebook with the injected cell, and each cell's index in the input (None: injected).

    The index is counted in the input as the user has it, before papermill's
    error-marker cells of an earlier run are removed: the numbers reported are
    the ones the user sees when opening their notebook.
    """
    origin: list[int | None] = [
        i
        for i, c in enumerate(nb.cells)
        if "papermill-error-cell-tag" not in c.metadata.get("tags", [])
    ]
    nb = remove_error_markers(nb)
    if not params:
        return nb, origin
    cell = nbformat.v4.new_code_cell(source=render_parameters(params))
    cell.metadata["tags"] = ["injected-parameters"]
    cell.metadata["papermill"] = {}
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    injected = next((i for i, t in enumerate(tags) if "injected-parameters" in t), None)
    declared = next((i for i, t in enumerate(tags) if "parameters" in t), None)
    if injected is not None:
        nb.cells[injected] = cell
        origin[injected] = None
    else:
        at = declared + 1 if declared is not None else 0
        nb.cells.insert(at, cell)
        origin.insert(at, None)
    # JSON-safe for the metadata only: the cell above holds the faithful values.
    nb.metadata.papermill["parameters"] = {k: _metadata_value(v) for k, v in params.items()}
    return nb, origin


def _metadata_value(value: Any) -> Any:
    """A parameter as papermill's metadata shows it: JSON scalars as they are, a secret as its
    reference (`secret:NAME`; a `Secret` is a str, so it is checked first), the rest as repr."""
    name = getattr(value, "__nbflow_secret__", None)
    if name is not None:
        return f"secret:{name}"
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    return repr(value)


# --- the engine -------------------------------------------------------------------------


@dataclass
class _RunControl:
    """What our engine needs beyond papermill's arguments, for one run."""

    env: dict[str, str]
    cwd: str
    socket_prefix: str
    deadline: float | None
    progress: Progress | None
    origin: list[int | None]
    """Each cell's number: its index in the input notebook (None: the injected cell)."""
    total: int
    secrets: tuple[str, ...] = ()
    """Values masked in every message from the kernel."""
    done: int = 0
    current: int | None = None
    """Index of the cell running (None: the kernel is still starting)."""

    def cell_timeout(self, cell: Any) -> float | None:
        if self.deadline is None:
            return None
        # nbclient reads 0 as "no timeout": a spent budget must still be positive.
        return max(self.deadline - time.monotonic(), 0.001)

    def remaining(self, default: float) -> float:
        if self.deadline is None:
            return default
        return max(min(default, self.deadline - time.monotonic()), 0.001)


class _KernelManager(AsyncKernelManager):
    """jupyter_client's manager, without the SIGINT it sends a kernel before every shutdown.

    That interrupt is meant to stop a busy kernel so it can answer the shutdown request;
    ours are idle when a run has ended (a timeout, a dead kernel or Ctrl-C kill them
    instead), and one that gets it inside a message handler logs `[IPKernelApp] ERROR |
    KeyboardInterrupt caught in kernel.` on the terminal of whoever ran the notebook, once
    per run. A kernel that does not answer the request is still terminated, then killed,
    by jupyter_client after its shutdown wait."""

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


class _Client(PapermillNotebookClient):
    """papermill's client, with IPC sockets, a run budget and progress reports."""

    control: _RunControl

    def create_kernel_manager(self) -> AsyncKernelManager:
        # IPC transport in a folder of this run: no TCP port is picked, so no race
        # between parallel runs picking the same one (papermill#511).
        self.km = _KernelManager(
            kernel_name=self.kernel_name,
            transport="ipc",
            ip=self.control.socket_prefix,
            config=self.config,
        )
        return self.km

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        # Masked before papermill's client sees it: the cell's outputs (and so every save of
        # the notebook, papermill's autosave included) never hold a secret value.
        if self.control.secrets and "content" in msg:
            msg["content"] = _masked(msg["content"], self.control.secrets)
        return super().process_message(msg, cell, cell_index)

    def papermill_execute_cells(self) -> None:
        # papermill's loop, plus: stop on a spent budget or a dead kernel with the
        # cell marked failed (so the banner points at it), and report progress.
        control = self.control
        for index, cell in enumerate(self.nb.cells):
            control.current = index
            try:
                self.nb_man.cell_start(cell, index)
                self.execute_cell(cell, index)
            except CellExecutionError as ex:
                self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                break
            except (CellTimeoutError, DeadKernelError) as ex:
                self.shutdown_kernel = "immediate"
                self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                raise
            finally:
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
                if cell.cell_type == "code":
                    control.done += 1
                    if control.progress is not None:
                        control.progress(
                            control.done,
                            control.total,
                            cell=control.origin[index],
                            first_line=_first_line(cell.source),
                        )


class NbflowEngine(NBClientEngine):
    """papermill engine `nbflow`: nbclient with the additions listed in the module docstring."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        *,
        nbflow_control: _RunControl,
        start_timeout: float = 60,
        **kwargs: Any,
    ) -> Any:
        control = nbflow_control
        client = _Client(
            nb_man,
            kernel_name=kernel_name,
            timeout_func=control.cell_timeout,
            startup_timeout=math.ceil(control.remaining(start_timeout)),
            log=logger,
        )
        client.control = control
        env = {**os.environ, **control.env}
        return client.execute(env=env, cwd=control.cwd)


papermill_engines.register("nbflow", NbflowEngine)


def _masked(content: Any, values: tuple[str, ...]) -> Any:
    """`content` (a kernel message's JSON) with every string masked; other values kept."""
    if isinstance(content, str):
        return mask(content, values)
    if isinstance(content, dict):
        return {k: _masked(v, values) for k, v in content.items()}
    if isinstance(content, list | tuple):
        return [_masked(v, values) for v in content]
    return content


def _execute(
    nb: nbformat.NotebookNode,
    out: Path,
    kernel_name: str,
    control: _RunControl,
    start_timeout: float,
) -> BaseException | None:
    """Run the engine; return what stopped the run early (a timeout or a dead kernel), if anything."""
    try:
        papermill_engines.execute_notebook_with_engine(
            "nbflow",
            nb,
            kernel_name,
            output_path=str(out),
            progress_bar=False,
            log_output=False,
            start_timeout=start_timeout,
            nbflow_control=control,
        )
    except (CellTimeoutError, DeadKernelError) as exc:
        return exc
    except FileNotFoundError as exc:
        raise KernelStartError(kernel_name, str(exc)) from exc
    except RuntimeError as exc:
        if control.current is None:
            # Never got to a cell: the kernel did not start or answer in time.
            if control.deadline is not None and time.monotonic() >= control.deadline:
                return CellTimeoutError(str(exc))
            raise KernelStartError(kernel_name, str(exc)) from exc
        raise
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# `sys.exit(code)` with these codes ends a Python program with exit status 0. IPython
# reports the SystemExit as an error output whose evalue is `str(code)`; papermill
# itself lets only "" and "0" pass, so None and False are recognised here.
_CLEAN_EXIT = frozenset({"", "0", "None", "False"})


def _outcome(
    nb: nbformat.NotebookNode,
    out: Path,
    origin: list[int | None],
    stopped: BaseException | None,
    timeout: float | None,
) -> tuple[NotebookFailure | None, int | None]:
    """Write the output notebook; return the failure, if any, and the cell a clean `sys.exit()` stopped at."""
    if stopped is not None:
        return _stopped_failure(nb, out, origin, stopped, timeout), None
    exited = _clean_exit(nb)
    if exited is not None:
        # A deliberate stop: no banner, and `ok` — with the cell it stopped at recorded,
        # since the cells after it did not run.
        write_ipynb(nb, str(out))
        return None, origin[exited]
    return _failure(nb, out, origin), None


def _clean_exit(nb: nbformat.NotebookNode) -> int | None:
    """Index of the cell that stopped the run with a clean `sys.exit()`, if that is what stopped it."""
    for index, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            first = errors[0]
            clean = first.get("ename") == "SystemExit" and first.get("evalue") in _CLEAN_EXIT
            return index if clean else None
    return None


def _failure(
    nb: nbformat.NotebookNode, out: Path, origin: list[int | None]
) -> NotebookFailure | None:
    """Add papermill's error banner to the output notebook and describe the failure."""
    cells = list(nb.cells)  # papermill inserts its banner cells into `nb` before raising
    try:
        # Writes the output with papermill's banner before raising.
        raise_for_execution_errors(nb, str(out))
    except PapermillExecutionError as exc:
        return NotebookFailure(
            reason="exception",
            cell_index=origin[exc.cell_index],
            ename=exc.ename,
            evalue=exc.evalue,
            traceback=_ANSI.sub("", "\n".join(exc.traceback)),
            execution_count=exc.exec_count,
            first_line=_first_line(cells[exc.cell_index].source),
        )
    write_ipynb(nb, str(out))
    return None


def _stopped_failure(
    nb: nbformat.NotebookNode,
    out: Path,
    origin: list[int | None],
    stopped: BaseException,
    timeout: float | None,
) -> NotebookFailure:
    """A run cut short by its budget or a dead kernel: an error output in the cell it was in."""
    index = next(
        (i for i, c in enumerate(nb.cells) if c.metadata.get("papermill", {}).get("exception")),
        None,
    )
    # Taken before papermill inserts its banner cells into `nb`, which shifts the indices.
    cell = nb.cells[index] if index is not None else None
    line = _first_line(cell.source) if cell is not None else ""
    position = _where(origin[index], line).removeprefix(" in ") if index is not None else "start-up"
    if isinstance(stopped, DeadKernelError):
        reason: Literal["timeout", "kernel died"] = "kernel died"
        ename = "DeadKernelError"
        evalue = (
            f"the kernel died while running {position}; it may have been killed, "
            "crashed or run out of memory"
        )
    else:
        reason = "timeout"
        ename = "TimeoutError"
        evalue = (
            f"the notebook did not finish within its timeout of {timeout:g} s "
            f"(stopped in {position}); the kernel was stopped"
        )
    if cell is not None:
        cell.outputs.append(
            nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[evalue])
        )
        try:
            raise_for_execution_errors(nb, str(out))
        except PapermillExecutionError:
            pass  # expected: it wrote the banner, and we describe the failure ourselves
    else:
        write_ipynb(nb, str(out))
    return NotebookFailure(
        reason=reason,
        cell_index=origin[index] if index is not None else None,
        ename=ename,
        evalue=evalue,
        traceback=evalue,
        execution_count=cell.get("execution_count") if cell is not None else None,
        first_line=line,
    )


def _first_line(source: str, limit: int = 60) -> str:
    """A cell's first non-blank line, shortened to `limit` characters: what names it beside its number."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _where(index: int | None, line: str) -> str:
    """Where a cell is, for messages: `in cell 5 `x = 1``, numbered as the module docstring says."""
    if index is None:
        # No number: the injected cell (which has a first line), or no cell at all.
        return " in the injected-parameters cell" if line else ""
    return f" in cell {index} `{line}`" if line else f" in cell {index}"

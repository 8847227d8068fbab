"""nbflow: turn Jupyter notebooks into cached, scheduled, parameterized pipelines.

    import nbflow as nf

    @nf.task
    def raw(date: str): ...

    @nf.task(retries=3)
    def clean(raw): ...

    r = nf.run(params={"date": "2024-01-01"})

The Jupyter layer (widget, magics) and the jobs layer (papermill) are
imported only when used, so scripts and workers load the engine alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The upper layers attach the views the engine does not draw (Pipeline.to_dot, .show).
from nbflow import jupyter as _jupyter  # noqa: F401
from nbflow import viz as _viz  # noqa: F401
from nbflow.core.errors import (
    BranchError,
    CacheError,
    CycleError,
    DuplicateOutputError,
    HomeError,
    IntegrityError,
    JobsError,
    MapInputError,
    MissingParameterError,
    NbflowError,
    NbflowWarning,
    ParameterError,
    PipelineError,
    ResourceError,
    SensorTimeout,
    TaskError,
    TaskTimeout,
    UnknownDependencyError,
    UnknownPartitionError,
    UnknownTaskError,
    UnpicklableResult,
    UnpicklableTask,
    WorkerDied,
)
from nbflow.core.events import LoggingListener, ProgressListener
from nbflow.core.patterns.output import Output
from nbflow.core.patterns.partitions import BackfillResult, DailyPartitions, StaticPartitions
from nbflow.core.patterns.pools import pool
from nbflow.core.pipeline.default import (
    branch,
    check,
    clear_cache,
    default_pipeline,
    explain,
    invalidate,
    resource,
    run,
    sensor,
    status,
    task,
    wait_for_file,
)
from nbflow.core.pipeline.pipeline import Pipeline
from nbflow.core.result import RunFailed, RunResult, StatusReport, TaskStatus
from nbflow.core.secrets import SecretError, secret

# Importing the history registers its recorder as a listener of every run.
from nbflow.history.api import history, last_run
from nbflow.jobs.hooks import set_report_writer as _set_report_writer


def _write_alert_report(run_id: str, home: Path) -> Path:
    """An alert's report (jobs/alerts.py, `alerts.report` setting), made by the ui layer."""
    from nbflow.ui.report import home_report_path, write_report

    return write_report(run_id, home_report_path(home, run_id), private=True)


_set_report_writer(_write_alert_report)

__version__ = "0.1.0"

__all__ = [
    "BackfillResult",
    "BranchError",
    "CacheError",
    "CycleError",
    "DailyPartitions",
    "DaskExecutor",
    "DuplicateOutputError",
    "HomeError",
    "IntegrityError",
    "JobsError",
    "LoggingListener",
    "MapInputError",
    "MissingParameterError",
    "NbflowError",
    "NbflowWarning",
    "Output",
    "ParameterError",
    "Pipeline",
    "PipelineError",
    "ProcessExecutor",
    "ProgressListener",
    "ResourceError",
    "RunFailed",
    "RunResult",
    "SecretError",
    "SensorTimeout",
    "StaticPartitions",
    "StatusReport",
    "TaskError",
    "TaskStatus",
    "TaskTimeout",
    "ThreadExecutor",
    "UnknownDependencyError",
    "UnknownPartitionError",
    "UnknownTaskError",
    "UnpicklableResult",
    "UnpicklableTask",
    "WorkerDied",
    "__version__",
    "branch",
    "check",
    "clear_cache",
    "default_pipeline",
    "diff_runs",
    "explain",
    "history",
    "invalidate",
    "last_run",
    "load_ipython_extension",
    "notebook_parameters",
    "notebook_task",
    "pool",
    "record",
    "report",
    "resource",
    "run",
    "run_notebook",
    "secret",
    "sensor",
    "show",
    "status",
    "task",
    "wait_for_file",
]


def show(
    pipeline: Pipeline | None = None, *, interval: float = 0.1, widget: bool | None = None
) -> Any:
    """Show the live DAG widget of `pipeline` (default: the default pipeline); see
    `Pipeline.show` for `interval` and `widget`."""
    return (pipeline or default_pipeline()).show(interval=interval, widget=widget)


# The jobs and Jupyter layers load on first use.
_LAZY = {
    "run_notebook": "nbflow.jobs.notebook",
    "notebook_parameters": "nbflow.jobs.parameters",
    "record": "nbflow.jobs.record",
    "notebook_task": "nbflow.jobs.notebook_task",
    "diff_runs": "nbflow.history.diff",
    "report": "nbflow.ui.report",
    "ThreadExecutor": "nbflow.core.executors.parallel",
    "ProcessExecutor": "nbflow.core.executors.parallel",
    "DaskExecutor": "nbflow.core.executors.dask",
    "load_ipython_extension": "nbflow.jupyter.extension",
    "unload_ipython_extension": "nbflow.jupyter.extension",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from pathlib import Path

    from nbflow.core.executors.dask import DaskExecutor
    from nbflow.core.executors.parallel import ProcessExecutor, ThreadExecutor
    from nbflow.history.diff import diff_runs
    from nbflow.jobs.notebook import run_notebook
    from nbflow.jobs.notebook_task import notebook_task
    from nbflow.jobs.parameters import notebook_parameters
    from nbflow.jobs.record import record
    from nbflow.jupyter.extension import load_ipython_extension
    from nbflow.ui.report import report

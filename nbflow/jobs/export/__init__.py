"""Exports: hand an nbflow job to Airflow 3 or Prefect 3, running the same notebook the same way.

Responsibilities:
- `export_job`: read a stored job (`schedule add`) from the run store and write
  one file for the orchestrator — an Airflow DAG file (`airflow.py`) or a
  Prefect flow with its deployment (`prefect.py`) — into a folder.
- `job_export_spec`: what every export embeds: the job's spec as stored
  (`Schedule.to_dict()` plus `backoff` when set), the home it runs in, and
  the first tick the orchestrator may run (nbflow never runs a tick before the
  job was added or before `--start`).
- `run_job` (in `runtime.py`): what the generated task calls in the
  orchestrator's process. It renders the job's parameters for the run's
  logical date with nbflow's own templates (so `{{ ds }}` is the tick's date in
  the job's zone, exactly as under `nbflow scheduler`), runs the notebook with
  `run_notebook` in the job's home (so the output notebook, `nf.record` values
  and the inner pipeline's cache are nbflow's), and raises `NotebookFailed`
  naming the cell and the error when the notebook fails, after printing the
  notebook's traceback into the task log.

Policy: the generated file is meant to be read and edited by a person. It
states, option by option, how the job was mapped and where the orchestrator's
semantics differ from nbflow's time rules (docs/export.md lists the same).
Nothing is exported half: an option with no equivalent is mapped as closely as
the orchestrator allows and the file says so in a comment.

Not yet shared: nbflow's run history (`nbflow runs`) does not record runs the
orchestrator makes, and there is no shared cache URL yet — the generated code
uses the job's home and its cache folder, as nbflow's scheduler does today, so
the orchestrator must run on a machine that sees that folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.jobs.runstore import JobRecord, RunStore

__all__ = [
    "ORCHESTRATORS",
    "ExportError",
    "JobExport",
    "export_filename",
    "export_job",
    "job_export_spec",
]

Orchestrator = Literal["airflow", "prefect"]
ORCHESTRATORS: tuple[Orchestrator, ...] = ("airflow", "prefect")


class ExportError(JobsError):
    """A job cannot be exported (unknown orchestrator, or the output folder is unusable)."""


@dataclass(frozen=True)
class JobExport:
    """What an export embeds in the file it writes."""

    name: str
    spec: dict[str, Any]
    """The stored spec (`Schedule.to_dict()`, and `backoff` when the job has one)."""
    home: Path
    """The job's nbflow home: its cache, its `runs/` folder for output notebooks."""
    first_tick: datetime | None
    """The orchestrator's start date: the first tick at or after `--start` (and, with
    catch-up on, after the job was added or resumed, or with no `--start`, after it was
    added); None when the schedule has no tick (a file sensor)."""
    created_at: datetime


def job_export_spec(record: JobRecord, home: Path) -> JobExport:
    """The export of stored job `record` of the run store in `home`."""
    from datetime import timedelta

    schedule = record.schedule
    spec = dict(record.spec)
    spec["name"] = record.name
    spec["paused"] = record.paused
    # With catch-up on, the orchestrator would run every tick since its start date, but
    # nbflow runs none before the job was added (or resumed): start there. With catch-up
    # off only the latest tick runs anyway, so --start alone bounds it, and a backfill in
    # the orchestrator may reach back to --start as `nbflow backfill` can.
    earliest = record.active_since
    if schedule.start is not None:
        earliest = max(earliest, schedule.start) if schedule.catchup else schedule.start
    first_tick = None
    if schedule.cron is not None or schedule.every is not None:
        # next_ticks is strictly after its argument: a tick at `earliest` itself counts.
        ticks = schedule.next_ticks(earliest - timedelta(microseconds=1), 1)
        first_tick = ticks[0] if ticks else None
    return JobExport(
        name=record.name,
        spec=spec,
        home=home,
        first_tick=first_tick,
        created_at=record.created_at.astimezone(UTC),
    )


def export_filename(name: str, orchestrator: str) -> str:
    """`JOB_<orchestrator>.py`, with `-` and `.` of the job's name as `_`: an importable
    module name (Prefect's entry points and `from daily_etl_prefect import job_flow`)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name) + f"_{orchestrator}.py"


def export_job(
    orchestrator: str, name: str, out_dir: str | Path = ".", *, store: RunStore | None = None
) -> Path:
    """Write the export of job `name` for `orchestrator` ("airflow" or "prefect") into
    `out_dir`; returns the file written. The job is read from `store` (default: the home's)."""
    if orchestrator not in ORCHESTRATORS:
        raise ExportError(
            f"cannot export to `{orchestrator}`{did_you_mean(orchestrator, ORCHESTRATORS)}; "
            f"nbflow exports to {' and '.join(ORCHESTRATORS)}"
        )
    store = store or RunStore()
    record = store.get_job(name)  # UnknownJobError names the near miss
    job = job_export_spec(record, store.path.parent)
    folder = Path(out_dir).absolute()
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"output folder `{folder}` is a file; give a folder with -o DIR")
    folder.mkdir(parents=True, exist_ok=True)
    if orchestrator == "airflow":
        from nbflow.jobs.export.airflow import render_airflow_dag

        target, text = folder / export_filename(name, "airflow"), render_airflow_dag(job)
    else:
        from nbflow.jobs.export.prefect import render_prefect_flow

        target, text = folder / export_filename(name, "prefect"), render_prefect_flow(job)
    # Written next to the target, then renamed: a reader (Airflow's DAG processor parses
    # its folder continuously) never sees half a file.
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text)
    partial.replace(target)
    return target

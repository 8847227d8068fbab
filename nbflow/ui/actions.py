"""What the dashboard's buttons do: the functions the CLI calls, then a runner process.

- **trigger**: `nbflow.jobs.scheduler.trigger_run` (the `nbflow trigger` path): the
  overrides are the form's texts, checked against the notebook's declared parameters
  before anything is stored; a bad value raises the CLI's own error.
- **pause / resume**: `RunStore.pause_job` / `resume_job` (`nbflow schedule pause|resume`).
- **backfill**: `plan_backfill(dry_run=True)` counts the runs first (the page shows the
  number before asking), then `plan_backfill` creates them (`nbflow backfill`).
- **rerun a failed run**: what its error's advice says (`rerun_advice`): a manual or
  sensor run is triggered again with its parameters; a scheduled or backfill run is a
  backfill of its logical date with `--reprocess failed`.

The runs made are executed by a child process, `python -m nbflow.ui.runner RUN_ID...`,
which runs them as `nbflow trigger` / `backfill` do in the foreground
(`run_in_foreground`: retries waited out, the job's max-active respected). Claims are
atomic, so a scheduler running on the same home at the same time never runs one twice.
The server itself never executes anything it was sent: only a job's declared notebook,
with parameters validated as the CLI validates them.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nbflow.core.errors import JobsError
from nbflow.jobs.runstore import RETRYABLE_STATES, RunRecord, RunStore

_CHILDREN: list[subprocess.Popen[bytes]] = []
_CHILDREN_LOCK = threading.Lock()


def start_runner(home: Path, run_ids: list[int]) -> None:
    """Execute `run_ids` in a child process of their own session (it outlives a page,
    and a restart of the server does not stop it). Its output goes to
    `<home>/logs/dashboard-runner.log`."""
    if not run_ids:
        return
    logs = home / "logs"
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(logs / "dashboard-runner.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "nbflow.ui.runner", *map(str, run_ids)],
            env={**os.environ, "NBFLOW_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
        )
    finally:
        os.close(fd)
    with _CHILDREN_LOCK:
        _CHILDREN.append(child)
        # Reap those that ended, so none stays a zombie of the server.
        _CHILDREN[:] = [c for c in _CHILDREN if c.poll() is None]


def trigger(store: RunStore, home: Path, name: str, overrides: Mapping[str, str]) -> RunRecord:
    """A manual run of job `name` with `overrides` (texts, as `-p NAME VALUE`), started."""
    from nbflow.jobs.launch import trigger_run

    run = trigger_run(store, name, dict(overrides))
    start_runner(home, [run.id])
    return run


def pause(store: RunStore, name: str) -> None:
    store.pause_job(name)


def resume(store: RunStore, name: str) -> None:
    store.resume_job(name)


@dataclass(frozen=True)
class BackfillPreview:
    """What a backfill would do, shown before it is confirmed."""

    ticks: int
    new: int
    skipped: dict[str, int]
    first: dt.datetime
    last: dt.datetime


def backfill_range(
    store: RunStore, name: str, start: str, end: str
) -> tuple[dt.datetime, dt.datetime]:
    """`--start` / `--end` texts read in the job's zone, as the CLI reads them."""
    from nbflow.jobs.schedules import ScheduleError, parse_when

    tz = store.get_job(name).schedule.tz
    if not start or not end:
        raise ScheduleError("give both a start and an end date for the backfill")
    first, last = parse_when(start, tz), parse_when(end, tz, end_of_day=True)
    if last < first:
        raise ScheduleError(f"--end {end} is before --start {start}")
    return first, last


def preview_backfill(
    store: RunStore, name: str, start: str, end: str, reprocess: str = "none"
) -> BackfillPreview:
    from nbflow.jobs.launch import plan_backfill

    first, last = backfill_range(store, name, start, end)
    plan = plan_backfill(store, name, first, last, reprocess=reprocess, dry_run=True)
    return BackfillPreview(plan.ticks, plan.new, dict(plan.skipped), first, last)


def backfill(
    store: RunStore, home: Path, name: str, start: str, end: str, reprocess: str = "none"
) -> list[int]:
    """Create the backfill's runs and start them; returns the runs it waits for."""
    from nbflow.jobs.launch import plan_backfill

    first, last = backfill_range(store, name, start, end)
    plan = plan_backfill(store, name, first, last, reprocess=reprocess)
    start_runner(home, plan.run_ids)
    return plan.run_ids


def rerun(store: RunStore, home: Path, run_id: int) -> list[int]:
    """Run a failed run again, the way its error's advice says (see module docstring)."""
    from nbflow.jobs.launch import plan_backfill, trigger_run
    from nbflow.jobs.runstore import logical_iso

    run = store.get_run(run_id)
    if run.state not in RETRYABLE_STATES:
        raise JobsError(f"run {run_id} of `{run.job}` is {run.state}, not failed; nothing to rerun")
    if run.run_type in ("manual", "sensor"):
        overrides = {k: str(v) for k, v in run.parameters.items()}
        # The stored texts are already rendered: pass them as literals of this run.
        again = trigger_run(store, run.job, _escape_templates(overrides))
        ids = [again.id]
    else:
        when = run.logical_date
        plan = plan_backfill(store, run.job, when, when, reprocess="failed")
        ids = plan.run_ids
        if not ids:
            raise JobsError(
                f"run {run_id} ({logical_iso(when)}) was not reopened: "
                f"{', '.join(plan.skipped) or 'nothing to do'}"
            )
    start_runner(home, ids)
    return ids


def rerun_failed(store: RunStore, home: Path, name: str) -> list[int]:
    """Rerun every failed run of job `name` whose logical date has no success since."""
    ids: list[int] = []
    for run in store.list_runs(name, states=RETRYABLE_STATES):
        ids.extend(rerun(store, home, run.id))
    return ids


def _escape_templates(texts: Mapping[str, str]) -> dict[str, str]:
    """Stored parameter texts were rendered once; `{{` left in them is data, so it is
    wrapped in Jinja's raw block before they are rendered again."""
    return {
        k: ("{% raw %}" + v + "{% endraw %}") if ("{{" in v or "{%" in v) else v
        for k, v in texts.items()
    }

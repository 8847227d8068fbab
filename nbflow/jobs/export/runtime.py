"""What an exported task runs inside Airflow or Prefect: one run of the job's notebook, nbflow's way.

The generated DAG or flow imports this module in the orchestrator's process
(nbflow must be installed in that environment) and calls `run_job` once per
run attempt. The story of one call:

1. The job's spec (embedded in the generated file) becomes a `Schedule` again.
2. Its parameters (plus the orchestrator's overrides: Airflow's DAG params,
   Prefect's flow parameters) are rendered for the run's logical date by
   `render_run_parameters` — nbflow's templates, so `{{ ds }}` is the tick's
   date in the job's zone and `{{ data_interval_start }}` nbflow's previous
   tick, whatever the orchestrator calls those — then parsed against the
   notebook's declared types, as the scheduler does.
3. `run_notebook` executes the notebook with `NBFLOW_HOME` set to the job's
   home, so the inner pipeline's cache is the one nbflow's scheduler and the
   notebook in Jupyter use: a second run of the same date is served from it.
   The output notebook is `<home>/runs/JOB/JOB-<logical date>-<orchestrator>-try<N>.ipynb`.
4. A failed notebook prints the notebook's traceback (the cell's, not nbflow's
   frames) to stdout, which both orchestrators keep in the task log, and
   raises `NotebookFailed`, whose message names the cell and the error: the
   task fails, and the orchestrator's retries apply.

Runs made here are not in nbflow's run history (`nbflow runs`): the
orchestrator's own history records them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbflow.core.errors import JobsError

__all__ = ["output_path_for_export", "parse_logical_date", "run_job"]


def parse_logical_date(value: datetime | str) -> datetime:
    """An aware UTC datetime from an orchestrator's logical date (a datetime, pendulum's
    included, or ISO text). A naive value is refused: its zone would be a guess."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise JobsError(
                f"logical date {value!r} is not ISO 8601; give e.g. 2024-03-01T01:30:00+00:00"
            ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise JobsError(
            f"logical date {value.isoformat()} has no time zone; give it with an offset "
            "(e.g. +00:00) so the run's date is not a guess"
        )
    # Through a timestamp: a pendulum DateTime becomes a plain datetime (nbflow's templates
    # print plain ISO text).
    return datetime.fromtimestamp(value.timestamp(), UTC)


def output_path_for_export(home: Path, job: str, logical_date: datetime, tag: str) -> Path:
    """`<home>/runs/JOB/JOB-<logical date, UTC, compact>-<tag>.ipynb` (`tag` e.g. `airflow-try1`)."""
    from nbflow.core.home import ensure_private_dir

    stamp = logical_date.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
    return ensure_private_dir(home / "runs" / job) / f"{job}-{stamp}-{safe}.ipynb"


@contextmanager
def _home(home: Path) -> Iterator[None]:
    """`NBFLOW_HOME` set to the job's home for the duration (run_notebook and its kernel read it)."""
    before = os.environ.get("NBFLOW_HOME")
    os.environ["NBFLOW_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NBFLOW_HOME", None)
        else:
            os.environ["NBFLOW_HOME"] = before


def run_job(
    spec: Mapping[str, Any],
    *,
    logical_date: datetime | str,
    home: str | Path,
    orchestrator: str,
    attempt: int = 1,
    overrides: Mapping[str, str] | None = None,
    key: str = "",
) -> dict[str, Any]:
    """Run the notebook of the job `spec` for `logical_date` in `home` (see the module docstring).

    Returns JSON-ready facts of the run (the orchestrator keeps them: Airflow as the
    task's XCom, Prefect as its result): the output notebook, the rendered parameters,
    the duration, and the values the notebook recorded with `nf.record` when they are
    plain JSON. Raises `NotebookFailed` when the notebook fails. `key` tells apart the
    output notebooks of runs that share a logical date (Airflow's mapped per-file tasks).
    """
    from nbflow.jobs.notebook import run_notebook
    from nbflow.jobs.run_parameters import parse_run_parameters, render_run_parameters
    from nbflow.jobs.schedules import Schedule

    schedule = Schedule.from_dict(spec)
    tick = parse_logical_date(logical_date)
    home = Path(home).expanduser().absolute()
    with _home(home):
        texts = render_run_parameters(schedule, tick, overrides)
        values = parse_run_parameters(schedule.notebook, texts)
        tag = f"{orchestrator}-{key}-try{attempt}" if key else f"{orchestrator}-try{attempt}"
        out = output_path_for_export(home, schedule.name, tick, tag)
        print(f"nbflow: job {schedule.name}, logical date {tick.isoformat()}, parameters {texts}")
        run = run_notebook(schedule.notebook, values, output=out, timeout=schedule.timeout)
    print(f"nbflow: output notebook {run.output_path}")
    if run.error is not None:
        print(f"nbflow: the notebook failed: {run.error}")
        print(run.error.traceback.rstrip("\n"))
        run.raise_for_failure()
    return {
        "output_path": str(run.output_path),
        "parameters": texts,
        "duration": run.duration,
        "outputs": {k: v for k, v in run.outputs.items() if _plain(v)},
    }


def _plain(value: Any) -> bool:
    """JSON-ready without conversion (what an orchestrator can store as a result)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def take_new_files(spec: Mapping[str, Any], *, home: str | Path, orchestrator: str) -> list[str]:
    """The files matching the job's `--when-file` pattern that are new or changed (by path
    and SHA-256, as nbflow's sensor decides), marked as taken so the next call skips them.

    The ledger is `<home>/runs/JOB/.<orchestrator>-files.json`, separate from nbflow's own
    sensor record, so the orchestrator and `nbflow scheduler` do not take each other's
    files. One caller at a time (the exported DAG allows one active run)."""
    import json

    from nbflow.jobs.file_sensor import file_digest, matching_files

    pattern = spec.get("when_file")
    if not pattern:
        raise JobsError(f"job `{spec.get('name')}` has no --when-file pattern to watch")
    folder = Path(home).expanduser().absolute() / "runs" / str(spec["name"])
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / f".{orchestrator}-files.json"
    seen: dict[str, str] = json.loads(ledger.read_text()) if ledger.is_file() else {}
    taken = []
    for path in matching_files(str(pattern)):
        try:
            digest = file_digest(path)
        except OSError:
            continue  # vanished between glob and read: the next poke sees it again
        if seen.get(path) != digest:
            seen[path] = digest
            taken.append(path)
    if taken:
        partial = ledger.with_name(ledger.name + ".partial")
        partial.write_text(json.dumps(seen, indent=1, sort_keys=True))
        partial.replace(ledger)
    return taken


def send_alerts(
    event: str,
    spec: Mapping[str, Any],
    *,
    logical_date: datetime | str | None,
    home: str | Path,
    orchestrator: str,
    attempt: int = 1,
    error: str | None = None,
) -> None:
    """Send the job's `on_<event>` alerts (`failure`, `retry`, `success`) from an orchestrator's
    callback, through nbflow's own senders (webhook, `python:`, `mailto:`, command).

    The payload is nbflow's, with `run_type` the orchestrator's name and `run_id` 0: the
    run is not in nbflow's history. Never raises (an alert never fails a run)."""
    from nbflow.jobs.alerts import notify
    from nbflow.jobs.runstore import RunRecord

    targets = tuple(spec.get(f"on_{event}") or ())
    if not targets:
        return
    now = datetime.now(UTC)
    try:
        tick = parse_logical_date(logical_date) if logical_date is not None else now
    except JobsError:
        tick = now
    states = {"failure": "failed", "retry": "failed", "success": "success"}
    run = RunRecord(
        id=0,
        job=str(spec["name"]),
        run_type=orchestrator,
        logical_date=tick,
        state=states.get(event, event),
        attempts=attempt,
        retry_base=0,
        pid=os.getpid(),
        heartbeat=None,
        queued_at=now,
        not_before=None,
        started_at=None,
        ended_at=now,
        duration=None,
        output_path=None,
        error=error,
        reason=None,
        parameters={},
    )
    with _home(Path(home).expanduser().absolute()):  # e-mail settings are the home's
        from nbflow.jobs.runstore import RunStore

        notify(event, run.job, run, targets, store=RunStore())


def outside_window(spec: Mapping[str, Any], logical_date: datetime | str) -> str | None:
    """Why a scheduled tick falls outside the job's `--start`/`--end` (None when inside): for
    orchestrators whose schedules have no such bounds (Prefect's cron and interval)."""
    from nbflow.jobs.schedules import Schedule

    schedule = Schedule.from_dict(spec)
    tick = parse_logical_date(logical_date)
    if schedule.start is not None and tick < schedule.start:
        return (
            f"the tick {tick.isoformat()} is before the job's --start {schedule.start.isoformat()}"
        )
    if schedule.end is not None and tick > schedule.end:
        return f"the tick {tick.isoformat()} is after the job's --end {schedule.end.isoformat()}"
    return None

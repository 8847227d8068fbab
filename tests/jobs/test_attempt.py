"""One attempt of a job run, in this process (`execute_run`, what `python -m
nbflow.jobs.attempt RUN_ID` does): claimed once, its notebook run by a real kernel, its end
recorded with the output notebook; nothing to do when the job is gone or the run is claimed."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from nbflow.jobs.attempt import execute_run
from nbflow.jobs.launch import create_job_run
from nbflow.jobs.runstore import RunStore
from nbflow.jobs.schedules import Schedule

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"
TICK = datetime(2024, 1, 2, 2, 0, tzinfo=UTC)


def _queued_run(store: RunStore, notebook: str = "scheduled_job.ipynb") -> int:
    path = Path.cwd() / "job.ipynb"
    shutil.copy(FIXTURES / notebook, path)
    spec = Schedule("etl", str(path), cron="0 2 * * *", parameters={"day": "{{ ds }}"})
    store.add_job("etl", spec.to_dict(), now=datetime(2024, 1, 1, tzinfo=UTC))
    run, made = create_job_run(store, store.get_job("etl"), "scheduled", TICK)
    assert made
    return run.id


def test_an_attempt_runs_the_notebook_and_records_its_end(home: Path) -> None:
    store = RunStore()
    run_id = _queued_run(store)
    outcome = execute_run(run_id, store=store, alerts=False)
    assert outcome.state == "success" and outcome.attempt == 1
    run = store.get_run(run_id)
    assert (run.state, run.attempts) == ("success", 1)
    out = Path(run.output_path or "")
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill["parameters"]["day"] == "2024-01-02"  # rendered for its tick
    assert not list(out.parent.glob("*.attempt-*")), "the attempt's work file was published"


def test_a_run_already_claimed_is_not_run_again(home: Path) -> None:
    store = RunStore()
    run_id = _queued_run(store)
    assert store.claim_attempt(run_id, pid=1) == 1  # another runner holds it
    outcome = execute_run(run_id, store=store, alerts=False)
    assert outcome.state == "not claimed"
    assert store.get_run(run_id).state == "running"  # left to its owner


def test_the_run_of_a_removed_job_is_left_as_the_removal_ended_it(home: Path) -> None:
    store = RunStore()
    run_id = _queued_run(store)
    assert store.remove_job("etl") == 1  # its queued run is skipped with the job
    outcome = execute_run(run_id, store=store, alerts=False)
    assert outcome.state == "not claimed"  # a runner started meanwhile runs nothing
    run = store.get_run(run_id)
    assert (run.state, run.reason, run.attempts) == ("skipped", "job removed", 0)

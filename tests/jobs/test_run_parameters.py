"""The one path from a job's `-p` texts to a run's values (jobs/run_parameters.py), which
scheduled, triggered, backfilled and sensor runs and exported jobs all take."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from nbflow.core.errors import JobsError
from nbflow.jobs.launch import create_job_run, plan_backfill, trigger_run
from nbflow.jobs.run_parameters import (
    parse_run_parameters,
    render_run_parameters,
    schedule_context,
)
from nbflow.jobs.runstore import RunStore
from nbflow.jobs.schedules import Schedule

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_run_parameters_render_templates_and_parse_declared_types(tmp_path):
    nb = tmp_path / "typed_parameters.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    schedule = Schedule(
        "j",
        str(nb),
        cron="30 2 * * *",
        tz="Europe/Berlin",
        parameters={"day": "{{ ds }}", "title": "report {{ ds_nodash }}", "rows": "7"},
    )
    texts = render_run_parameters(schedule, utc(2024, 3, 31, 1, 0), {"rows": "9"})
    assert texts == {"day": "2024-03-31", "title": "report 20240331", "rows": "9"}
    values = parse_run_parameters(schedule.notebook, texts)
    assert values == {"day": date(2024, 3, 31), "title": "report 20240331", "rows": 9}


def test_params_in_templates_fall_back_to_the_notebook_defaults(tmp_path):
    nb = tmp_path / "typed_parameters.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    # `rows` is not set by the job: params.rows is the notebook's default, 10
    schedule = Schedule(
        "j", str(nb), cron="0 2 * * *", parameters={"title": "top {{ params.rows }}"}
    )
    schedule.check_notebook()
    assert render_run_parameters(schedule, utc(2024, 1, 1, 2)) == {"title": "top 10"}


def test_the_context_is_the_ticks_data_interval_in_the_jobs_zone(tmp_path):
    schedule = Schedule("j", str(tmp_path / "x.ipynb"), cron="0 2 * * *", tz="Europe/Berlin")
    context = schedule_context(schedule, utc(2024, 3, 31, 0, 0))  # 02:00 Berlin is CEST
    assert context["ds"] == "2024-03-31"
    assert context["data_interval_start"].isoformat().startswith("2024-03-30")


def test_literals_are_data_never_rendered(tmp_path):
    nb = tmp_path / "typed_parameters.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    schedule = Schedule("j", str(nb), cron="0 2 * * *", parameters={"title": "{{ ds }}"})
    texts = render_run_parameters(schedule, utc(2024, 1, 1, 2), literals={"path": "x{{ 7 * 7 }}"})
    assert texts == {"title": "2024-01-01", "path": "x{{ 7 * 7 }}"}


def test_every_way_a_run_starts_stores_the_same_rendered_texts(tmp_path, home):
    """Scheduled (and sensor) runs, a trigger and a backfill of one tick get the same row."""
    nb = tmp_path / "typed_parameters.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    schedule = Schedule("j", str(nb), cron="0 2 * * *", parameters={"title": "r {{ ds_nodash }}"})
    store = RunStore()
    store.add_job("j", schedule.to_dict(), now=utc(2023, 12, 1))
    record = store.get_job("j")
    tick = utc(2024, 1, 1, 2)
    scheduled, _ = create_job_run(store, record, "scheduled", tick)
    backfilled = store.get_run(
        plan_backfill(store, "j", utc(2024, 1, 2, 2), utc(2024, 1, 2, 2)).run_ids[0]
    )
    manual = trigger_run(store, "j", now=tick)
    assert scheduled.parameters == {"title": "r 20240101"}
    assert backfilled.parameters == {"title": "r 20240102"}
    assert manual.parameters == {"title": "r 20240101"}


def test_a_template_that_cannot_render_makes_a_failed_run_not_a_silent_skip(tmp_path, home):
    nb = tmp_path / "typed_parameters.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    schedule = Schedule("j", str(nb), cron="0 2 * * *", parameters={"title": "{{ 1 / 0 }}"})
    store = RunStore()
    store.add_job("j", schedule.to_dict(), now=utc(2023, 12, 1))
    run, made = create_job_run(store, store.get_job("j"), "scheduled", utc(2024, 1, 1, 2))
    assert made and run.state == "failed" and "could not be rendered" in (run.error or "")
    with pytest.raises(JobsError):
        trigger_run(store, "j")

"""`nbflow export airflow JOB`: one Airflow 3 DAG file per job.

How each option maps (the generated file repeats this next to each setting,
and docs/export.md has the table):

- `--cron` and `--tz` -> `CronTriggerTimetable(cron, timezone=tz)`: its
  logical date is the tick itself, as nbflow's is (the data-interval timetable
  would make it the previous tick). `--every` -> `DeltaTriggerTimetable`, with
  `start_date` on nbflow's anchor so the ticks fall where nbflow's do.
- `--start` / the moment the job was added -> `start_date`: the first tick
  nbflow would run; `--end` -> `end_date`; `--catchup` -> `catchup`;
  `--max-active` -> `max_active_runs`; a paused job -> `is_paused_upon_creation`.
- `--retries`, `--retry-delay`, the spec's `backoff` -> the task's `retries`,
  `retry_delay`, `retry_exponential_backoff`; `--timeout` -> nbflow's own
  notebook timeout, and `execution_timeout` a minute later as a backstop.
- `-p` parameters -> DAG `params` (so a manual run can override them), rendered
  per run by nbflow's templates in `run_job`.
- `--on-failure` / `--on-retry` / `--on-success` -> the task's callbacks,
  sending through nbflow's alert senders.
- `--when-file` -> a `PythonSensor` that waits for a new or changed file, then
  one mapped task per file (with the file as the parameter `path`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2

from nbflow.jobs.export import JobExport
from nbflow.jobs.export.mapping import (
    comment_block,
    format_seconds,
    parameter_notes,
    python_literal,
)
from nbflow.jobs.schedules import Schedule, format_every

__all__ = ["TEMPLATE_MEANING", "render_airflow_dag"]

# What each nbflow template name means, in Airflow's terms.
TEMPLATE_MEANING = {
    "ds": "the logical date's day in {tz}; Airflow's own {{{{ ds }}}} is its day in UTC "
    '(here: {{{{ logical_date.in_timezone("{tz}").strftime("%Y-%m-%d") }}}})',
    "ds_nodash": "the same day as 20240331; Airflow's {{{{ ds_nodash }}}} is the UTC day",
    "logical_date": "the tick, ISO text in UTC: Airflow's {{{{ logical_date }}}} "
    "(CronTriggerTimetable: the tick itself)",
    "data_interval_start": "nbflow's previous tick; Airflow's trigger timetable sets its "
    "{{{{ data_interval_start }}}} to the logical date, so nbflow computes it",
    "data_interval_end": "the tick: Airflow's {{{{ data_interval_end }}}} (= logical date)",
    "params": "the job's parameter `{name}`, itself rendered first when it is a template "
    "(Airflow's {{{{ params.{name} }}}} would not render it)",
}

_ENV = jinja2.Environment(
    # Other delimiters than Jinja's: the generated file mentions {{ ds }} in its comments.
    block_start_string="<%",
    block_end_string="%>",
    variable_start_string="<<",
    variable_end_string=">>",
    comment_start_string="<#",
    comment_end_string="#>",
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)

_TEMPLATE = _ENV.from_string('''\
"""Airflow DAG of the nbflow job `<< name >>`, written by `nbflow export airflow << name >>`
on << written >>.

The task runs the job's notebook through nbflow (`run_job` -> `run_notebook`), as
`nbflow scheduler` does: the same parameters and templates, the output notebook
under << home >>/runs/<< name >>/, and the same inner cache, so a date
that ran before is served from nbflow's cache inside the notebook. nbflow must be
installed in the Python environment Airflow runs the task in (`pip install nbflow-pipelines`).

Not shared (yet): runs made by Airflow are in Airflow's history, not in `nbflow
runs`; nbflow has no shared cache URL yet, so Airflow's workers must see the
job's home folder below. Edit this file freely; export again to start over.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, get_current_context, task
<% if sensor %>
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import PokeReturnValue
<% endif %>
<% if timetable_import %>
from airflow.sdk import << timetable_import >>
<% endif %>

from nbflow.jobs.export.runtime import run_job, send_alerts<% if sensor %>, take_new_files<% endif %>


# The job as nbflow stores it (`nbflow schedule show << name >>`); run_job reads it back
# with nbflow's Schedule, so templates and time rules are nbflow's.
JOB = << job >>

# The job's nbflow home: its cache (<home>/cache, which the notebook's tasks use) and
# its output notebooks (<home>/runs/<< name >>/). The shared cache URL does not exist yet.
NBFLOW_HOME = << home_literal >>

<< when_comment >>
SCHEDULE = << schedule >>

<< start_comment >>
START_DATE = << start_date >>
<< end_comment >>
END_DATE = << end_date >>

# Parameters (-p): Airflow params, so "Trigger DAG" (or `airflow dags trigger --conf`) can
# override them for one run. nbflow renders each per run for the run's logical date:
<< param_comment >>
PARAMS = {
<% for pname, text in parameters %>
    << pname >>: Param(<< text >>, type="string"),
<% endfor %>
}

<% for line in alert_comment %>
<< line >>
<% endfor %>
def _alert(event: str):
    def callback(context) -> None:
        send_alerts(
            event,
            JOB,
            logical_date=context.get("logical_date") or context["dag_run"].run_after,
            home=NBFLOW_HOME,
            orchestrator="airflow",
            attempt=context["ti"].try_number,
            error=str(context.get("exception") or "") or None,
        )

    return callback


with DAG(
    dag_id=<< name_literal >>,
    schedule=SCHEDULE,
    start_date=START_DATE,
    end_date=END_DATE,
    << catchup_line >>
    << max_active_line >>
    << paused_line >>
    params=PARAMS,
    tags=["nbflow"],
    doc_md=__doc__,
) as dag:
<% if sensor %>

    << sensor_comment >>
    def _new_files() -> PokeReturnValue:
        files = take_new_files(JOB, home=NBFLOW_HOME, orchestrator="airflow")
        return PokeReturnValue(is_done=bool(files), xcom_value=files)

    wait_for_files = PythonSensor(
        task_id="wait_for_files",
        python_callable=_new_files,
        mode="reschedule",  # frees the worker slot between pokes
        poke_interval=30,  # seconds; nbflow's scheduler looks every poll (2 s)
        timeout=7 * 24 * 3600,  # then the run fails and the next one waits again
    )
<% endif %>

    << retry_comment >>
    @task(
        task_id="run_notebook",
        << retries_line >>
        << delay_line >>
        << backoff_line >>
        << timeout_line >>
        on_failure_callback=_alert("failure"),
        on_retry_callback=_alert("retry"),
        on_success_callback=_alert("success"),
    )
    def run_notebook(<% if sensor %>path: str<% endif %>) -> dict:
        context = get_current_context()
        # A manual run may have no logical date in Airflow 3: nbflow takes the moment it
        # was asked for, as `nbflow trigger` does.
        tick = context.get("logical_date") or context["dag_run"].run_after
        return run_job(
            JOB,
            logical_date=tick,
            home=NBFLOW_HOME,
            orchestrator="airflow",
            attempt=context["ti"].try_number,
<% if sensor %>
            overrides={**context["params"], "path": path},
            key=f"file{context['ti'].map_index}",  # one output notebook per file of the run
<% else %>
            overrides=dict(context["params"]),
<% endif %>
        )

<% if sensor %>
    # One notebook run per file, as nbflow's sensor makes one run per file.
    run_notebook.expand(path=wait_for_files.output)
<% else %>
    run_notebook()
<% endif %>
''')


def _dt_literal(moment: datetime | None) -> str:
    if moment is None:
        return "None"
    m = moment.astimezone(UTC)
    return (
        f"dt.datetime({m.year}, {m.month}, {m.day}, {m.hour}, {m.minute}, {m.second}, "
        f"{m.microsecond}, tzinfo=dt.timezone.utc)"
        if m.microsecond
        else f"dt.datetime({m.year}, {m.month}, {m.day}, {m.hour}, {m.minute}, {m.second}, "
        "tzinfo=dt.timezone.utc)"
    )


def _when(schedule: Schedule, job: JobExport) -> tuple[str, str, str]:
    """(the comment, the `schedule=` value, the timetable class to import)."""
    if schedule.cron is not None:
        lines = [
            f"When: --cron {schedule.cron!r} --tz {schedule.tz} ({schedule.kind}) -> "
            "CronTriggerTimetable:",
            "the logical date of a run is its tick, as in nbflow. Where Airflow's ticks differ",
            "from nbflow's time rules (`nbflow schedule show` prints them):",
        ]
        if schedule.frequent:
            lines += [
                "- a frequent job: Airflow, like nbflow, runs every real hour on both change",
                "  days (the repeated fall-back hour twice, once per real UTC hour).",
            ]
        else:
            lines += [
                "- a local time inside the spring-forward gap (02:30 in Europe/Berlin on 31 March",
                "  2024): nbflow runs once at the end of the gap (03:00); Airflow runs at 03:30,",
                "  the missing time shifted by the hour lost.",
                "- a local time that happens twice on a fall-back day (02:30 on 27 October 2024):",
                "  both run once; nbflow at the first (summer-time, 00:30 UTC) occurrence,",
                "  Airflow at the second (winter-time, 01:30 UTC).",
            ]
        lines.append(
            "To keep nbflow's exact ticks, use a zone without DST (UTC) or `nbflow scheduler`."
        )
        value = f"CronTriggerTimetable({schedule.cron!r}, timezone={schedule.tz!r})"
        return comment_block(lines), value, "CronTriggerTimetable"
    if schedule.every is not None:
        anchor = "--start" if schedule.start is not None else "1970-01-01T00:00Z"
        lines = [
            f"When: --every {format_every(schedule.every)} -> DeltaTriggerTimetable: a fixed",
            f"duration in UTC, as in nbflow (which anchors the ticks at {anchor}); START_DATE",
            "is nbflow's first tick, so Airflow's ticks fall on nbflow's. Airflow counts each",
            "interval from the previous run's tick, so after a pause it may re-anchor.",
        ]
        value = f"DeltaTriggerTimetable(dt.timedelta(seconds={schedule.every:g}))"
        return comment_block(lines), value, "DeltaTriggerTimetable"
    lines = [
        f"When: --when-file {schedule.when_file!r}: no clock schedule. A continuous DAG",
        "(one run at a time) whose sensor waits for a new or changed matching file.",
    ]
    return comment_block(lines), '"@continuous"', ""


def render_airflow_dag(job: JobExport) -> str:
    """The text of the Airflow DAG file of `job` (see the module docstring)."""
    schedule = Schedule.from_dict(job.spec)
    when_comment, schedule_value, timetable_import = _when(schedule, job)
    sensor = schedule.when_file is not None
    if sensor and schedule_value != '"@continuous"':
        # A sensor job with a clock too: each tick's run waits for its files.
        when_comment += "\n# and --when-file: each run first waits for a new or changed file."

    added = job.created_at.isoformat(timespec="seconds")
    if schedule.start is not None and not schedule.catchup:
        start_lines = [
            f"--start {schedule.start.isoformat()}: no run before it; START_DATE is the first",
            "tick at or after it (catch-up is off, so Airflow runs only the latest tick when",
            "the DAG is unpaused, not every tick since START_DATE).",
        ]
    else:
        start_lines = [
            f"nbflow runs no tick before the job was added ({added})"
            + (f" nor before --start {schedule.start.isoformat()}" if schedule.start else "")
            + ":",
            "START_DATE is the first such tick, so Airflow's catch-up does not reach back.",
        ]
    start_comment = comment_block(start_lines)
    start = job.first_tick or job.created_at
    end_comment = (
        comment_block([f"--end {schedule.end.isoformat()}: no run after it."])
        if schedule.end is not None
        else "# No --end."
    )

    if schedule.catchup:
        catchup_line = (
            "catchup=True,  # --catchup: one run per missed tick, oldest first "
            "(at most max_active_runs at a time)"
        )
    else:
        catchup_line = (
            "catchup=False,  # catch-up off: after downtime only the latest tick runs; nbflow "
            "also requires it to be at most one period late and records the others as missed"
        )
    max_active_line = f"max_active_runs={schedule.max_active},  # --max-active"
    paused_line = (
        "is_paused_upon_creation=True,  # the job is paused in nbflow"
        if schedule.paused
        else "is_paused_upon_creation=False,  # the job is active in nbflow"
    )

    backoff = float(job.spec.get("backoff") or 0)
    retry_lines = [
        f"Retries: --retries {schedule.retries}, --retry-delay "
        f"{format_seconds(schedule.retry_delay)}"
        + (f", backoff x{backoff:g}" if backoff else "")
        + ": the whole notebook runs again, as in nbflow."
    ]
    if backoff and backoff != 1:
        retry_lines.append(
            f"nbflow waits retry_delay * {backoff:g} ** (attempt - 1) exactly; Airflow waits "
            "between that and twice it (its jitter)."
        )
    if schedule.timeout is not None:
        retry_lines.append(
            f"--timeout {format_seconds(schedule.timeout)}: nbflow stops the notebook (and "
            "names the cell);"
        )
        retry_lines.append(
            "Airflow's execution_timeout, a minute later, only backs that up (kernel shutdown)."
        )
    retries_line = f"retries={schedule.retries},"
    delay_line = f"retry_delay=dt.timedelta(seconds={schedule.retry_delay:g}),"
    backoff_line = (
        f"retry_exponential_backoff={backoff:g},"
        if backoff and backoff != 1
        else "retry_exponential_backoff=0,  # constant delay (no backoff in the job)"
    )
    timeout_line = (
        f"execution_timeout=dt.timedelta(seconds={schedule.timeout + 60:g}),"
        if schedule.timeout is not None
        else "execution_timeout=None,  # no --timeout"
    )

    notes = parameter_notes(schedule.parameters, schedule.tz, TEMPLATE_MEANING)
    if sensor:
        notes.append("path: the file the sensor found (a --when-file job's parameter `path`)")
    param_comment = comment_block(notes or ["(the job has no parameters)"])

    alerts = [
        f"--on-{event} {', '.join(targets)}"
        for event, targets in (
            ("failure", schedule.on_failure),
            ("retry", schedule.on_retry),
            ("success", schedule.on_success),
        )
        if targets
    ]
    alert_comment = comment_block(
        [
            "Alerts: Airflow's task callbacks send the job's alerts through nbflow's senders",
            "(webhook, python:, mailto:, apprise URL, command), with nbflow's payload ("
            + ("; ".join(alerts) if alerts else "the job has none")
            + ").",
            "A failure alert is sent when the last try fails, as in nbflow.",
        ]
    ).splitlines()
    sensor_comment = comment_block(
        [
            "--when-file: Airflow's FileSensor only sees that some file matches; nbflow runs",
            "once per new or changed file (path and SHA-256), so this sensor asks nbflow which",
            "files are new (ledger: <home>/runs/JOB/.airflow-files.json, apart from the ledger",
            "of `nbflow scheduler`).",
        ],
        indent="    ",
    ).lstrip()

    return _TEMPLATE.render(
        name=job.name,
        name_literal=repr(job.name),
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        home=str(job.home),
        home_literal=repr(str(job.home)),
        job=python_literal(job.spec),
        sensor=sensor,
        timetable_import=timetable_import,
        when_comment=when_comment,
        schedule=schedule_value,
        start_comment=start_comment,
        start_date=_dt_literal(start),
        end_comment=end_comment,
        end_date=_dt_literal(schedule.end),
        param_comment=param_comment,
        parameters=[(repr(n), repr(t)) for n, t in schedule.parameters.items()],
        alert_comment=alert_comment,
        catchup_line=catchup_line,
        max_active_line=max_active_line,
        paused_line=paused_line,
        sensor_comment=sensor_comment,
        retry_comment=comment_block(retry_lines, indent="    ").lstrip(),
        retries_line=retries_line,
        delay_line=delay_line,
        backoff_line=backoff_line,
        timeout_line=timeout_line,
    )
